"""
Hypothesis strategies shared by the differential tests: requests as a client could send them,
within what werkzeug's own environ builder can represent (the reference they are checked
against).
"""
from __future__ import annotations

from hypothesis import strategies as st

__all__ = ("TCHARS", "VISIBLE_LATIN1", "requests", "environ_key", "joined_for_werkzeug")

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VISIBLE_LATIN1 = "".join(chr(c) for c in range(0x21, 0x7F)) + "".join(
    chr(c) for c in range(0xA0, 0x100))

header_names = st.one_of(
    st.sampled_from(["Accept", "accept", "X-Thing", "x-thing", "X_Thing", "Cookie", "cookie",
                     "User-Agent", "Content-Type", "CONTENT-TYPE", "Accept-Encoding"]),
    st.text(TCHARS, min_size=1, max_size=12),
)
header_values = st.text(VISIBLE_LATIN1 + " \t", max_size=20).map(lambda v: v.strip(" \t"))
methods = st.one_of(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
                    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8))
path_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="?#%"),
                    max_size=12)
escapes = st.integers(0, 255).map(lambda b: "%%%02X" % b)
path_pieces = st.lists(st.one_of(path_text, escapes, st.just("/")), max_size=8)
query_strings = st.lists(st.one_of(
    st.text("abcxyz0123-_.~=&;+", max_size=6),
    escapes,
    st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="#%"),
            max_size=4),
), max_size=6).map("".join)
content_types = st.sampled_from(["text/plain", "application/json", "text/html; charset=utf-8",
                                 "application/octet-stream"])


def environ_key(name):
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


def joined_for_werkzeug(headers):
    """Repeated fields as one (first name, joined value): werkzeug's builder would join Cookie
    with ", " and keep only one Content-Type; a server joins as RFC 9110 / RFC 6265 say."""
    joined = {}
    for name, value in headers:
        key = environ_key(name)
        if key in joined:
            first, old = joined[key]
            joined[key] = (first, old + ("; " if key == "HTTP_COOKIE" else ", ") + value)
        else:
            joined[key] = (name, value)
    return list(joined.values())


@st.composite
def requests(draw):
    headers = draw(st.lists(st.tuples(header_names, header_values), max_size=10))
    headers = [(n, v) for n, v in headers if environ_key(n) != "CONTENT_LENGTH"]
    if draw(st.booleans()):
        headers.append(("Content-Type", draw(content_types)))
    if draw(st.booleans()):
        headers.append(("Content-Length", str(draw(st.integers(0, 10**6)))))
    headers.insert(draw(st.integers(0, len(headers))), ("Host", "example.com"))
    # werkzeug's builder treats these as form data to encode itself
    form_types = ("multipart/", "application/x-www")
    headers = [(n, v) for n, v in headers
               if not (environ_key(n) == "CONTENT_TYPE" and v.lower().startswith(form_types))]
    # not "//...": werkzeug's builder would read that as a network-path reference (authority)
    path = "/" + "".join(draw(path_pieces)).lstrip("/")
    return draw(methods), path, draw(query_strings), headers
