"""The sipsec crypto-worker: a stateless pairing engine (encapsulate, decapsulate, sign, verify) over a process pool."""

__all__: list[str] = []
