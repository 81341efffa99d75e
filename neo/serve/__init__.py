"""`neo serve`: an OpenAI-compatible completion server over neo's KV-cache decoder with continuous batching.

`device` holds the jitted prefill/decode programs for a batched cache of fixed slots, `engine` the background thread
that owns the device and schedules requests into slots, `schema` the validated request, `app` the HTTP routes, and
`static/playground.html` the page served at `/`.
"""
