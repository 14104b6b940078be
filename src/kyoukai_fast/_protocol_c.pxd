# Declarations of the compiled protocol: typed per-request and per-connection state.

cdef class RequestState:
    cdef public dict environ
    cdef public bytes url
    cdef public list body
    cdef public Py_ssize_t body_size
    cdef public str version
    cdef public bint keep_alive
    cdef public str method
    cdef public int header_count      # header fields so far; trailer fields once in_trailers
    cdef public bint in_trailers      # the head of a chunked request is complete
    cdef public bint complete
    cdef public Py_ssize_t head_received  # bytes of an incomplete head after its first read


# A flag of the per-connection state: one byte rather than a bint's four, so that an idle
# connection stays small (see the layout note below).
ctypedef unsigned char flag


cdef class ServerShared:
    # What every connection of one server reads and never changes: one pointer per connection.
    cdef readonly object server            # the ServerState
    cdef public object request_handler     # handle(request, parent_context), see _pipeline
    cdef dict environ_template             # presized copy of the server's environ template
    cdef Py_ssize_t max_body_size
    cdef Py_ssize_t max_url_size
    cdef Py_ssize_t max_header_size
    cdef Py_ssize_t max_pipelined
    cdef Py_ssize_t write_high_water
    cdef double keepalive_timeout
    cdef double header_timeout
    cdef int max_header_count
    # Deployment hooks (kyoukai_fast._request_hooks): None unless a setting switches them on.
    cdef object proxies
    cdef object on_request
    cdef object on_response


cdef class HTTPProtocolCore:
    # Layout note: an idle keep-alive connection costs this object, httptools' parser and a
    # slot in the server's connection set. Per-server constants live once in ``_shared``; state
    # only a few connections ever need (flow control once paused, an h2c upgrade body, a read
    # backlog, lingering) lives in a ``_connection.ColdState`` made on first use; flags are bytes.
    #
    # ``public`` fields are what the shared connection layer (``_connection.HTTPConnection``,
    # plain Python) reads and sets; the hot path here uses them as C fields.

    # public API of the stock backend
    cdef readonly object component
    cdef readonly object app
    cdef readonly object parent_context
    cdef readonly object server_ip
    cdef readonly object server_port
    cdef public object transport
    cdef readonly object parser
    cdef public object ip
    cdef public object client_port

    # shared per server
    cdef ServerShared _shared
    cdef public object _loop
    cdef public str _url_scheme

    # per connection
    cdef public RequestState _current
    cdef public list _queue
    cdef public object _handler
    cdef public object _out          # writes held back while batching: None, bytes or list
    cdef public object _cold         # a _connection.ColdState, None until one is needed
    cdef object _read_buffer         # this thread's read buffer (memoryview), see _read_buffer
    cdef Py_ssize_t _out_size        # bytes in _out once it holds more than one write
    cdef public double _last_activity
    cdef public double _message_started  # read time at the last message boundary
    cdef public flag _busy
    cdef public flag _closing
    cdef public flag _close_when_idle
    cdef public flag _parse_state    # _connection.PARSING, PARSE_FAILED or UPGRADED
    cdef public flag _continue_pending
    cdef flag _batching

    cdef _received(self, data)
    cdef _on_message_begin(self)
    cdef _on_url(self, bytes url)
    cdef _on_header(self, bytes name, bytes value)
    cdef _on_headers_complete(self)
    cdef _on_body(self, bytes body)
    cdef _on_message_complete(self)
    cpdef _enqueue(self, item)
    cpdef _run_queue(self)
    cdef _drain_queue(self)
    cpdef _flush(self)
    cdef _start_request(self, RequestState req)
    cpdef _write_result(self, RequestState req, response)
    cdef _write(self, bytes data)
