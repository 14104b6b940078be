# Declarations of the compiled protocol: typed per-request and per-connection state.

cdef class RequestState:
    cdef public dict environ
    cdef public bytes url
    cdef public list body
    cdef public Py_ssize_t body_size
    cdef public str version
    cdef public bint keep_alive
    cdef public str method
    cdef public int header_count
    cdef public bint complete
    cdef public Py_ssize_t head_received  # bytes of an incomplete head after its first read


# A flag of the per-connection state: one byte rather than a bint's four, so that an idle
# connection stays small (see the layout note below).
ctypedef unsigned char flag


cdef class ServerShared:
    # What every connection of one server reads and never changes: one pointer per connection.
    cdef readonly object server            # the ServerState
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


cdef class ColdState:
    # Per-connection state that most connections never need.
    cdef object drain_waiter
    cdef object upgrade_body      # UpgradeBody of an h2c upgrade still receiving its body
    cdef object backlog           # bytes read but not parsed while the pipeline was full
    cdef double linger_until      # set while a refused client's connection is half closed
    cdef bint backlog_scheduled


cdef class HTTPProtocolCore:
    # Layout note: an idle keep-alive connection costs this object, httptools' parser and a
    # slot in the server's connection set. Per-server constants live once in ``_shared``; state
    # only a few connections ever need (a drain waiter, an h2c upgrade body, a read backlog,
    # lingering) lives in a ``ColdState`` made on first use; flags are bytes.

    # public API of the stock backend
    cdef readonly object component
    cdef readonly object app
    cdef readonly object parent_context
    cdef readonly object server_ip
    cdef readonly object server_port
    cdef readonly object transport
    cdef readonly object parser
    cdef readonly object ip
    cdef readonly object client_port

    # shared per server
    cdef ServerShared _shared
    cdef object _loop
    cdef str _url_scheme

    # per connection
    cdef RequestState _current
    cdef list _queue
    cdef object _handler
    cdef object _out                 # writes held back while batching: None, bytes or list
    cdef ColdState _cold             # None until one of its fields is needed
    cdef object _read_buffer         # this thread's read buffer (memoryview), see _read_buffer
    cdef Py_ssize_t _out_size        # bytes in _out once it holds more than one write
    cdef double _last_activity
    cdef double _message_started     # read time at the last message boundary (begin or end)
    cdef flag _busy
    cdef flag _closing
    cdef flag _eof
    cdef flag _parse_failed
    cdef flag _reading_paused
    cdef flag _writing_paused
    cdef flag _continue_pending
    cdef flag _batching

    cdef ColdState _cold_state(self)
    cdef _received(self, data)
    cdef _on_message_begin(self)
    cdef _on_url(self, bytes url)
    cdef _on_header(self, bytes name, bytes value)
    cdef _on_headers_complete(self)
    cdef _on_body(self, bytes body)
    cdef _on_message_complete(self)
    cdef _enqueue(self, item)
    cdef _request_incomplete(self, Py_ssize_t size)
    cdef _feed_in_slices(self, data)
    cdef _run_queue(self)
    cdef _drain_queue(self)
    cdef _flush(self)
    cdef _start_request(self, RequestState req)
    cdef _handler_failed(self, RequestState req, exc)
    cdef _refuse(self, error, RequestState req=*, bint linger=*)
    cdef _linger(self)
    cdef _write_result(self, RequestState req, response)
    cdef _write(self, bytes data)
    cdef _on_upgrade(self, bytes rest)
    cdef _handed_over(self)
    cdef _feed_upgrade_body(self, data)
