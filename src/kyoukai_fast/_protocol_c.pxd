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


cdef class HTTPProtocolCore:
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
    cdef object _server
    cdef dict _environ_template
    cdef object _loop
    cdef str _url_scheme

    # limits, copied from the server's ProtocolConfig
    cdef Py_ssize_t _max_body_size
    cdef Py_ssize_t _max_url_size
    cdef int _max_header_count
    cdef Py_ssize_t _max_header_size
    cdef Py_ssize_t _max_pipelined
    cdef double _keepalive_timeout
    cdef double _header_timeout

    # per connection
    cdef RequestState _current
    cdef list _queue
    cdef object _handler
    cdef object _drain_waiter
    cdef object _out                 # writes held back while batching: None, bytes or list
    cdef Py_ssize_t _out_size        # bytes in _out once it holds more than one write
    cdef Py_ssize_t _write_high_water
    cdef double _last_activity
    cdef double _message_started     # read time at the last message boundary (begin or end)
    cdef double _linger_until        # set while a refused client's connection is half closed
    cdef bint _busy
    cdef bint _closing
    cdef bint _eof
    cdef bint _parse_failed
    cdef bint _reading_paused
    cdef bint _writing_paused
    cdef bint _continue_pending
    cdef bint _batching
    cdef object _upgrade_body  # UpgradeBody of an h2c upgrade still receiving its body
    cdef object _backlog       # bytes read but not parsed while the pipeline was full
    cdef bint _backlog_scheduled

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
