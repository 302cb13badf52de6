"""Code generation: a channel's sender in another language (``speeddata codegen c``).

``model`` turns a channel's schema into a tree of typed nodes with their largest sizes
(what it refuses, it says, naming the field); ``c`` writes the single-header C99 sender
and an example program from that tree. No I/O in either.
"""
