"""The two clients: :class:`Client` (blocking) and :class:`AsyncClient` (``await``), one set of
operations (``_api.py``) driven two ways. Only sending, sleeping and streaming differ between them."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import pandas as pd

from modelport._version import __version__
from modelport.client._api import (
    Call,
    Model,
    Operations,
    Rows,
    Step,
    job_body,
    register_fields,
    release_options,
    sample_bytes,
)
from modelport.client._retry import Retries, may_resend
from modelport.client._wire import error_from, retry_after_seconds
from modelport.errors import ModelportError

__all__ = ["AsyncClient", "Client"]

T = TypeVar("T")
JSON = dict[str, Any]
Verify = bool | str | Path | ssl.SSLContext


class _Base:
    """Settings and the decisions both clients share: headers, TLS, how an answer is judged."""

    def __init__(
        self, url: str, key: str | None, retries: Retries | None, timeout: float | httpx.Timeout
    ) -> None:
        self.url = url.rstrip("/")
        self.retries = retries if retries is not None else Retries()
        self.timeout = timeout
        self._ops = Operations()
        self._headers = {"User-Agent": f"modelport-client/{__version__}"}
        if key is not None:
            self._headers["Authorization"] = f"Bearer {key}"

    def __repr__(self) -> str:  # never the key
        keyed = "Authorization" in self._headers
        return f"{type(self).__name__}({self.url!r}, key={'<set>' if keyed else None})"

    @staticmethod
    def _verify(verify: Verify) -> bool | ssl.SSLContext:
        if isinstance(verify, str | Path):  # a CA bundle (a private CA's certificate, say)
            return ssl.create_default_context(cafile=str(verify))
        return verify

    def _after_error(self, call: Call, error: httpx.TransportError, attempt: int, waited: float) -> float:
        """Seconds to wait before sending ``call`` again after a transport error; or raise it."""
        delay = self.retries.wait(attempt, waited) if may_resend(call.method, error) else None
        if delay is None:
            raise error
        return delay

    def _after_answer(self, response: httpx.Response, body: bytes, attempt: int, waited: float) -> float:
        """Seconds to wait before sending again after an error answer; or raise its error."""
        retry_after = retry_after_seconds(response.headers.get("retry-after"), time.time())
        error = error_from(response.status_code, body, retry_after, response.headers.get("x-modelport-error"))
        delay = None
        if response.status_code in self.retries.statuses:
            delay = self.retries.wait(attempt, waited, retry_after)
        if delay is None:
            raise error
        return delay


class Client(_Base):
    """A modelport server's public API, from Python (``docs/client.md``)::

        with modelport.Client("https://models.example.com", key=os.environ["MODELPORT_KEY"]) as client:
            answers = client.predict("credit-rating@production", frame)

    - ``key``: an API key (sent as ``Authorization: Bearer``); none for a ``--insecure-dev`` server.
    - ``retries``: :class:`Retries` — 429 and 503 answers and, where nothing can have been applied,
      transport errors (docs/client.md, "Retries").
    - ``timeout``: seconds for each attempt to connect, send and read (or an ``httpx.Timeout``).
    - ``verify``: ``True`` (the system's CAs), a CA bundle path, an ``ssl.SSLContext``, or ``False``.
    - ``transport``: an httpx transport to send through instead of the network (tests, proxies).

    Errors are the server's own :mod:`modelport.errors` classes; transport failures that are not
    retried are raised as httpx's (``httpx.TransportError``).
    """

    def __init__(
        self,
        url: str,
        key: str | None = None,
        *,
        retries: Retries | None = None,
        timeout: float | httpx.Timeout = 30.0,
        verify: Verify = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, key, retries, timeout)
        self._http = httpx.Client(
            base_url=self.url,
            headers=self._headers,
            timeout=timeout,
            verify=self._verify(verify),
            transport=transport,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, step: Step[T]) -> T:
        try:
            call = next(step)
            while True:
                try:
                    response = self._send(call)
                except ModelportError as error:
                    call = step.throw(error)  # the operation may handle it (predict does, once)
                else:
                    call = step.send(response)
        except StopIteration as done:
            result: T = done.value
            return result

    def _send(self, call: Call) -> httpx.Response:
        request = self._http.build_request(
            call.method,
            call.path,
            params=call.params,
            json=call.json,
            content=call.content,
            headers=call.headers,
        )
        attempt, waited = 0, 0.0
        while True:
            attempt += 1
            try:
                response = self._http.send(request, stream=call.sink is not None)
            except httpx.TransportError as error:
                delay = self._after_error(call, error, attempt, waited)
            else:
                if response.status_code < 400:
                    if call.sink is not None:
                        try:
                            with call.sink.open("wb") as out:
                                for piece in response.iter_bytes(1 << 20):
                                    out.write(piece)
                        finally:
                            response.close()
                    return response
                try:
                    body = response.read()
                finally:
                    response.close()
                delay = self._after_answer(response, body, attempt, waited)
            time.sleep(delay)
            waited += delay

    # -- the API (AsyncClient has the same methods, to await) ------------------------------------

    def metadata(self, ref: str) -> JSON:
        """The V2 metadata of the version ``ref`` names: inputs, outputs, classes, features (cached)."""
        from modelport.client._wire import split_ref

        return self._run(self._ops.metadata(*split_ref(ref)))

    def predict(self, ref: str, rows: Rows, *, request_id: str | None = None) -> pd.DataFrame:
        """Score ``rows`` (a DataFrame, a dict of columns or of one row, or an array with the features in
        the model's order) with ``ref`` (``NAME``, ``NAME@ALIAS``, ``NAME@VERSION``, ``NAME@LABEL``).
        One answer row per input row: ``label`` and ``p_<class>`` columns (``prediction`` for a
        regressor); ``.attrs`` holds ``model``, ``model_version`` (the version that answered: with a
        release, an arm's), ``request_id`` (for :meth:`feedback`) and ``flags``."""
        return self._run(self._ops.predict(ref, rows, request_id))

    def models(self) -> list[Model]:
        """The models the key may see."""
        return self._run(self._ops.models())

    def model(self, name: str) -> Model:
        """One model (its latest version number and aliases); ModelNotFound if the key cannot see it."""
        return self._run(self._ops.model(name))

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        override_reason: str | None = None,
        allow_incompatible: bool = False,
    ) -> JSON:
        """Point ``alias`` at ``version`` (publisher). ``{"status": "pending", …}`` when the alias
        needs a second key's approval."""
        return self._run(self._ops.set_alias(name, alias, version, override_reason, allow_incompatible))

    def register(
        self,
        model: str | Path,
        *,
        name: str,
        sample: pd.DataFrame | str | Path,
        format: str | None = None,
        alias: str | None = None,
        description: str = "",
        label: str | None = None,
        target: str | None = None,
        require_onnx: bool = False,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> JSON:
        """Register the model file ``model`` (skops, ONNX, XGBoost JSON/UBJ, LightGBM text — never a
        pickle) as a new version of ``name`` on the server (publisher): the same checks, conversion and
        equivalence proof as local registration, in a limited process on the server. Returns the new
        version's record. ``sample``: a DataFrame or a Parquet/CSV file of inputs."""
        path = Path(model)
        fields = register_fields(
            format=format,
            alias=alias,
            description=description,
            label=label,
            target=target,
            require_onnx=require_onnx,
            tags=tags,
            params=params,
            metrics=metrics,
        )
        step = self._ops.register(name, path.read_bytes(), path.name, sample_bytes(sample), fields)
        return self._run(step)

    def versions(self, name: str, *, limit: int | None = None) -> list[JSON]:
        """The versions of ``name``, newest first (number, status, label, creator, created_at, aliases)."""
        return self._run(self._ops.versions(name, limit))

    def remove_alias(self, name: str, alias: str) -> JSON:
        return self._run(self._ops.remove_alias(name, alias))

    def alias_history(self, name: str, alias: str) -> list[JSON]:
        return self._run(self._ops.alias_history(name, alias))

    def set_policy(self, name: str, on_violation: str) -> JSON:
        """What the model does with values outside its training ranges: ``flag``, ``reject`` …"""
        return self._run(self._ops.set_policy(name, on_violation))

    def start_release(
        self,
        name: str,
        alias: str,
        *,
        canary: int | None = None,
        weight: float | None = None,
        sticky_by: str | None = None,
        shadow: int | None = None,
        auto_rollback: Mapping[str, Any] | None = None,
        override_reason: str | None = None,
        allow_incompatible: bool = False,
    ) -> JSON:
        """Start or change a release on ``alias``: a ``canary`` version taking ``weight`` percent,
        and/or a ``shadow`` version (docs/releases.md)."""
        options = release_options(
            canary, weight, sticky_by, shadow, auto_rollback, override_reason, allow_incompatible
        )
        return self._run(self._ops.start_release(name, alias, options))

    def release_status(self, name: str, alias: str) -> JSON:
        return self._run(self._ops.release_status(name, alias))

    def promote(
        self, name: str, alias: str, *, override_reason: str | None = None, allow_incompatible: bool = False
    ) -> JSON:
        options = release_options(None, None, None, None, None, override_reason, allow_incompatible)
        return self._run(self._ops.promote(name, alias, options))

    def rollback(self, name: str, alias: str, *, reason: str | None = None) -> JSON:
        return self._run(self._ops.rollback(name, alias, reason))

    def stop_release(self, name: str, alias: str) -> JSON:
        return self._run(self._ops.stop_release(name, alias))

    def approvals(self, status: str | None = None) -> list[JSON]:
        """Changes waiting for (or past) a second key's approval: ``pending``, ``approved`` …"""
        return self._run(self._ops.approvals(status))

    def approve(self, change: int) -> JSON:
        return self._run(self._ops.approve(change))

    def reject(self, change: int, reason: str | None = None) -> JSON:
        return self._run(self._ops.reject(change, reason))

    def submit_job(
        self,
        model: str,
        input: str,
        output: str,
        *,
        keep: Sequence[str] | None = None,
        drop: Sequence[str] | None = None,
        on_violation: str | None = None,
        chunk_rows: int | None = None,
    ) -> JSON:
        """Queue a batch job on the server (paths inside its ``MODELPORT_BATCH_ROOTS``; docs/batch.md)."""
        body = job_body(model, input, output, keep, drop, on_violation, chunk_rows)
        return self._run(self._ops.submit_job(body))

    def job(self, job_id: str) -> JSON:
        return self._run(self._ops.job(job_id))

    def jobs(self) -> list[JSON]:
        return self._run(self._ops.jobs())

    def cancel_job(self, job_id: str) -> JSON:
        return self._run(self._ops.cancel_job(job_id))

    def job_output(self, job_id: str, to: str | Path) -> Path:
        """Download a finished job's output into the file ``to``, a MiB at a time."""
        return self._run(self._ops.job_output(job_id, Path(to)))

    def usage(
        self, *, key: str | None = None, model: str | None = None, since: date | None = None
    ) -> list[JSON]:
        """Usage records: the key's own (an admin's: any key's)."""
        return self._run(self._ops.usage(key, model, since))

    def feedback(self, model: str, labels: Sequence[Mapping[str, Any]] | pd.DataFrame) -> int:
        """True labels for earlier answers: ``{"request_id", "row", "label"}`` items (the request id is
        a prediction's ``attrs["request_id"]``). Returns how many were stored."""
        return self._run(self._ops.feedback(model, labels))

    def drift(self, name: str, *, version: int | None = None, windows: int = 1) -> JSON:
        return self._run(self._ops.drift(name, version, windows))


class AsyncClient(_Base):
    """:class:`Client` for asyncio: the same constructor and methods, each to ``await``::

    async with modelport.AsyncClient(url, key=key) as client:
        answers = await client.predict("credit-rating@production", frame)
    """

    def __init__(
        self,
        url: str,
        key: str | None = None,
        *,
        retries: Retries | None = None,
        timeout: float | httpx.Timeout = 30.0,
        verify: Verify = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, key, retries, timeout)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=self._headers,
            timeout=timeout,
            verify=self._verify(verify),
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _run(self, step: Step[T]) -> T:
        try:
            call = next(step)
            while True:
                try:
                    response = await self._send(call)
                except ModelportError as error:
                    call = step.throw(error)
                else:
                    call = step.send(response)
        except StopIteration as done:
            result: T = done.value
            return result

    async def _send(self, call: Call) -> httpx.Response:
        request = self._http.build_request(
            call.method,
            call.path,
            params=call.params,
            json=call.json,
            content=call.content,
            headers=call.headers,
        )
        attempt, waited = 0, 0.0
        while True:
            attempt += 1
            try:
                response = await self._http.send(request, stream=call.sink is not None)
            except httpx.TransportError as error:
                delay = self._after_error(call, error, attempt, waited)
            else:
                if response.status_code < 400:
                    if call.sink is not None:
                        try:
                            with call.sink.open("wb") as out:
                                async for piece in response.aiter_bytes(1 << 20):
                                    await asyncio.to_thread(out.write, piece)
                        finally:
                            await response.aclose()
                    return response
                try:
                    body = await response.aread()
                finally:
                    await response.aclose()
                delay = self._after_answer(response, body, attempt, waited)
            await asyncio.sleep(delay)
            waited += delay

    # -- the API: Client's, awaited ----------------------------------------------------------------

    async def metadata(self, ref: str) -> JSON:
        from modelport.client._wire import split_ref

        return await self._run(self._ops.metadata(*split_ref(ref)))

    async def predict(self, ref: str, rows: Rows, *, request_id: str | None = None) -> pd.DataFrame:
        return await self._run(self._ops.predict(ref, rows, request_id))

    async def models(self) -> list[Model]:
        return await self._run(self._ops.models())

    async def model(self, name: str) -> Model:
        return await self._run(self._ops.model(name))

    async def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        override_reason: str | None = None,
        allow_incompatible: bool = False,
    ) -> JSON:
        return await self._run(self._ops.set_alias(name, alias, version, override_reason, allow_incompatible))

    async def register(
        self,
        model: str | Path,
        *,
        name: str,
        sample: pd.DataFrame | str | Path,
        format: str | None = None,
        alias: str | None = None,
        description: str = "",
        label: str | None = None,
        target: str | None = None,
        require_onnx: bool = False,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> JSON:
        """Register the model file ``model`` (skops, ONNX, XGBoost JSON/UBJ, LightGBM text — never a
        pickle) as a new version of ``name`` on the server (publisher): the same checks, conversion and
        equivalence proof as local registration, in a limited process on the server. Returns the new
        version's record. ``sample``: a DataFrame or a Parquet/CSV file of inputs."""
        path = Path(model)
        fields = register_fields(
            format=format,
            alias=alias,
            description=description,
            label=label,
            target=target,
            require_onnx=require_onnx,
            tags=tags,
            params=params,
            metrics=metrics,
        )
        step = self._ops.register(name, path.read_bytes(), path.name, sample_bytes(sample), fields)
        return await self._run(step)

    async def versions(self, name: str, *, limit: int | None = None) -> list[JSON]:
        """The versions of ``name``, newest first (number, status, label, creator, created_at, aliases)."""
        return await self._run(self._ops.versions(name, limit))

    async def remove_alias(self, name: str, alias: str) -> JSON:
        return await self._run(self._ops.remove_alias(name, alias))

    async def alias_history(self, name: str, alias: str) -> list[JSON]:
        return await self._run(self._ops.alias_history(name, alias))

    async def set_policy(self, name: str, on_violation: str) -> JSON:
        return await self._run(self._ops.set_policy(name, on_violation))

    async def start_release(
        self,
        name: str,
        alias: str,
        *,
        canary: int | None = None,
        weight: float | None = None,
        sticky_by: str | None = None,
        shadow: int | None = None,
        auto_rollback: Mapping[str, Any] | None = None,
        override_reason: str | None = None,
        allow_incompatible: bool = False,
    ) -> JSON:
        options = release_options(
            canary, weight, sticky_by, shadow, auto_rollback, override_reason, allow_incompatible
        )
        return await self._run(self._ops.start_release(name, alias, options))

    async def release_status(self, name: str, alias: str) -> JSON:
        return await self._run(self._ops.release_status(name, alias))

    async def promote(
        self, name: str, alias: str, *, override_reason: str | None = None, allow_incompatible: bool = False
    ) -> JSON:
        options = release_options(None, None, None, None, None, override_reason, allow_incompatible)
        return await self._run(self._ops.promote(name, alias, options))

    async def rollback(self, name: str, alias: str, *, reason: str | None = None) -> JSON:
        return await self._run(self._ops.rollback(name, alias, reason))

    async def stop_release(self, name: str, alias: str) -> JSON:
        return await self._run(self._ops.stop_release(name, alias))

    async def approvals(self, status: str | None = None) -> list[JSON]:
        return await self._run(self._ops.approvals(status))

    async def approve(self, change: int) -> JSON:
        return await self._run(self._ops.approve(change))

    async def reject(self, change: int, reason: str | None = None) -> JSON:
        return await self._run(self._ops.reject(change, reason))

    async def submit_job(
        self,
        model: str,
        input: str,
        output: str,
        *,
        keep: Sequence[str] | None = None,
        drop: Sequence[str] | None = None,
        on_violation: str | None = None,
        chunk_rows: int | None = None,
    ) -> JSON:
        body = job_body(model, input, output, keep, drop, on_violation, chunk_rows)
        return await self._run(self._ops.submit_job(body))

    async def job(self, job_id: str) -> JSON:
        return await self._run(self._ops.job(job_id))

    async def jobs(self) -> list[JSON]:
        return await self._run(self._ops.jobs())

    async def cancel_job(self, job_id: str) -> JSON:
        return await self._run(self._ops.cancel_job(job_id))

    async def job_output(self, job_id: str, to: str | Path) -> Path:
        return await self._run(self._ops.job_output(job_id, Path(to)))

    async def usage(
        self, *, key: str | None = None, model: str | None = None, since: date | None = None
    ) -> list[JSON]:
        return await self._run(self._ops.usage(key, model, since))

    async def feedback(self, model: str, labels: Sequence[Mapping[str, Any]] | pd.DataFrame) -> int:
        return await self._run(self._ops.feedback(model, labels))

    async def drift(self, name: str, *, version: int | None = None, windows: int = 1) -> JSON:
        return await self._run(self._ops.drift(name, version, windows))
