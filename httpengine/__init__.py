"""The HTTP/1.1 engine every server and proxy of ours runs on: asyncio + httptools, tuned for a proxy.

It imports nothing else of ours (docs/design.md, "Rooms"). Modules, each with one job:

* ``server``: ``HttpServer``, the listener and the handler API (its docstring is the reference);
  ``connection``: one client connection (parsing, pipelining, limits, refusals, timeouts).
* ``request``: ``Request`` and its streamed ``RequestBody``; ``inflate`` decodes a compressed body.
* ``response``: ``ResponseSink``, the one response interface, with ``Response``, ``BufferedResponse``
  and ``WithHeader``; ``answer_failure``, the one way to tell a client its request failed.
* ``limits``: ``Limits``, the HTTP limits of every server, and the descriptor budget.
* ``upstream``: ``UpstreamPool``, keep-alive forwarding to one upstream; ``upstream_connection``: one
  pooled connection; ``head``: the plain-head check of its fast path.
* ``flow``: backpressure shared by both kinds of connection; ``errors``: what can fail.

docs/http-engine.md is the guide.
"""
