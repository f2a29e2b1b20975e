"""The HTTP/1.1 engine every server and proxy of ours runs on; it imports nothing else of ours."""
