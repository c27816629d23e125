"""A Python client for a modelport server's public API (``docs/client.md``).

    client = modelport.Client("https://models.example.com", key=os.environ["MODELPORT_KEY"])
    answers = client.predict("credit-rating@production", frame)   # a DataFrame in, a DataFrame out

:class:`Client` blocks, :class:`AsyncClient` is awaited; both drive the same operations (``_api.py``):
V2 binary tensors for ``predict``, ``/api/v1`` for models, aliases, releases, approvals, jobs, usage,
feedback and drift. Retries (``_retry.py``) and the mapping of answers to :mod:`modelport.errors`
classes (``_wire.py``) are shared too.

    _wire.py     bytes and tables: binary tensors, references, error bodies (pure)
    _retry.py    what is sent again, after how long (pure)
    _api.py      every operation, once, as a generator of HTTP calls
    _clients.py  Client and AsyncClient: send, sleep, stream
"""

from __future__ import annotations

from modelport.client._api import Model
from modelport.client._clients import AsyncClient, Client
from modelport.client._retry import Retries

__all__ = ["AsyncClient", "Client", "Model", "Retries"]
