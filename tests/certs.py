"""A throwaway certificate authority for the TLS tests, made at test time with trustme.

Nothing is written to the source tree: trustme keeps the keys in memory (it uses short-lived
temporary files only while loading them into an SSLContext).
"""

import ssl
from dataclasses import dataclass

import trustme

# The names the server certificate is valid for: what the tests connect to.
SERVER_NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class TestPKI:
    """A CA plus a server certificate it signed, as ready-made SSL contexts."""

    ca: trustme.CA
    server: ssl.SSLContext  # presents the certificate for SERVER_NAMES
    client: ssl.SSLContext  # verifies the server against the test CA, checks the host name

    __test__ = False  # not a pytest test class despite the name


def make_pki() -> TestPKI:
    """A fresh test CA, a server certificate for SERVER_NAMES, and both SSL contexts."""
    ca = trustme.CA()
    cert = ca.issue_cert(*SERVER_NAMES)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    return TestPKI(ca=ca, server=server, client=client)
