"""One router per resource: the web page and its tokens, status, matching, liveness."""
