"""``apihub status``: a live terminal view of the gateway's and the workers' ``/metrics``.

Modules, in the order a frame is made:

- ``targets``: what to watch (settings, ``.local/stack.env``, flags) and each provider's limit;
- ``scrape``: one round of HTTP reads, each failure turned into a "down" reason (the I/O seam);
- ``samples``: a page read into samples; counter increases and histogram quantiles;
- ``view``: the frame's numbers from two rounds (rates over the interval between them);
- ``render``: the frame as text lines of at most 80 columns;
- ``live``: the loop, the terminal (plain ANSI), Ctrl-C;
- ``command``: the ``apihub status`` flags.
"""
