# Declarations of the compiled default access line.

cdef class AccessLine:
    cdef list lines     # the AccessLog's lines not yet handed over to its writer
    cdef object wake    # AccessLog._wake: on the first line of a batch and on a full one
    cdef object clock   # time.perf_counter
