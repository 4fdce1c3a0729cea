"""Local fakes of the internet services helpgate talks to.

Tests cannot reach the internet, and a mock of a client library would only test our own
assumptions about it. Each fake here is a small server on 127.0.0.1 that speaks the
service's real wire format, so the real client library runs against it unchanged.
"""
