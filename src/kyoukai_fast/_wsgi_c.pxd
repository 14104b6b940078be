# Declarations of the compiled WSGI helpers, cimported by _protocol_c.pyx.

cdef str header_environ_key_of_bytes(bytes name)
cdef void add_header(dict environ, str key, str value) except *
cdef tuple split_target(str target)
cpdef tuple render_response(object response, dict environ, str version, bint keep_alive)
cpdef object new_request(object cls, dict environ)
cpdef dict presized_copy(dict source, Py_ssize_t capacity)
