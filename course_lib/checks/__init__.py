"""Exercise checks, one module per lesson (``from course_lib.checks import lesson01 as ex``)."""
