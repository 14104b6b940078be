"""Selector: the compiled ``_wsgi_c`` when available, else the pure-Python ``_wsgi_py``."""
from ._implementation import USE_EXTENSIONS

if USE_EXTENSIONS:
    try:
        from ._wsgi_c import get_formatted_response, to_wsgi_environment
    except ImportError:  # no compiled build: the pure-Python twin has the same API
        from ._wsgi_py import get_formatted_response, to_wsgi_environment
else:
    from ._wsgi_py import get_formatted_response, to_wsgi_environment

__all__ = ("get_formatted_response", "to_wsgi_environment")
