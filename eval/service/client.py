"""``RemoteAgent``: an Agent whose decisions come from an agent server, so matches test the service.

``play_matches(RemoteAgent(url), opponent, seeds)`` plays exactly like the in-process agent: the
remote side is stateless, so the client keeps the frame stack (``FrameStack``, built the way
``TorchAgent.stacked`` builds it) and sends each batch of stacks as one ``application/x-npy``
request (split into ``max_batch`` chunks). Binary float32 keeps inputs bit-identical to what the
in-process agent feeds its network, so on the same seeds a torch-served agent plays the very same
matches. An ONNX-served agent can differ only where two action scores tie within float rounding
(measured: 1 decision in 110,000, a 4.8e-7 margin, for the demo's MLP; the win rates over 500
matches against brawler and pro were still equal).
"""

from __future__ import annotations

import io
from typing import Any, Self

import numpy as np

from bcarena.agents.base import Agent
from bcarena.eval.errors import EvalError
from bcarena.eval.service.layout import NPY_TYPE, ObsLayout


class RemoteError(EvalError):
    """The agent server is unreachable, refused a request, answered something unexpected, or was sent
    observations that do not fit its input layout."""


class FrameStack:
    """Client-side frame stack: observations as ``Agent.act`` gets them -> model inputs as the server takes them.

    State: (B, 37) float32 -> (B, k * 37) float32, oldest first. Pixels: (B, 84, 84, 1) or (B, 84, 84)
    uint8 -> (B, k, 84, 84) uint8. The first observation after ``reset`` fills the whole stack.
    """

    def __init__(self, layout: ObsLayout) -> None:
        self.layout = layout
        self.k = int(layout.frame_stack or 1)
        shape = tuple(layout.shape)
        self.frame_shape = (shape[0] // self.k,) if layout.obs_type == "state" else shape[1:]
        self._stack: np.ndarray | None = None

    def reset(self) -> None:
        self._stack = None

    def push(self, obs: np.ndarray) -> np.ndarray:
        frame = np.asarray(obs)
        if self.layout.obs_type == "pixels" and frame.ndim == 4 and frame.shape[-1] == 1:
            frame = frame[..., 0]
        if frame.ndim != 1 + len(self.frame_shape) or frame.shape[1:] != self.frame_shape:
            raise RemoteError(
                f"expected {self.layout.obs_type} observations of shape (B, {self.frame_shape}), got {frame.shape}"
            )
        frame = frame.astype(self.layout.wire_dtype, copy=False)
        if self._stack is None or self._stack.shape[0] != frame.shape[0]:
            if self._stack is not None:
                raise ValueError(
                    f"batch of {frame.shape[0]} after a stack of {self._stack.shape[0]} rows; "
                    f"call reset({frame.shape[0]}) between batches"
                )
            self._stack = np.repeat(frame[:, None], self.k, axis=1)
        elif self.k > 1:
            self._stack = np.concatenate([self._stack[:, 1:], frame[:, None]], axis=1)
        else:
            self._stack = frame[:, None]
        stack = self._stack
        return stack.reshape(stack.shape[0], -1) if self.layout.obs_type == "state" else stack


class LayoutAgent(Agent):
    """Base of the agents whose model takes inputs of an ``ObsLayout`` (a served or exported model): they keep the
    frame stack the way the client does (``FrameStack``) and take one frame per ``act``; ``_act`` gets the stacks
    through ``self.stack.push(obs)``."""

    def _use_layout(self, layout: ObsLayout) -> None:
        self.layout = layout
        self.obs_type = layout.obs_type
        self.stack = FrameStack(layout)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """One observation as the layout takes it: (state_dim,) or (84, 84, 1)."""
        return self.stack.frame_shape if self.obs_type == "state" else (*self.stack.frame_shape, 1)

    def reset(self, batch_size: int) -> None:
        self.stack.reset()


class RemoteAgent(LayoutAgent):
    """An agent served over HTTP (``bcarena serve``). Use as a context manager or call ``close()``."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        import httpx

        if not url.startswith(("http://", "https://")):
            raise RemoteError(f"agent server URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self._httpx = httpx
        self._client = httpx.Client(base_url=self.url, timeout=timeout)
        self.metadata = self._call("GET", "/metadata")
        try:
            self._use_layout(ObsLayout.from_dict(self.metadata["layout"]))
            self.max_batch = int(self.metadata["max_batch"])
            self.action_names = list(self.metadata["action_names"])
            self.name = f"{self.metadata['agent']}@{self.url.split('://', 1)[1]}"
        except (KeyError, TypeError, ValueError) as exc:
            self.close()
            raise RemoteError(f"{self.url}/metadata is not an agent server's metadata ({exc!r})") from None
        self.model_sha256 = self.metadata.get("model_sha256")

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except self._httpx.HTTPError as exc:
            raise RemoteError(f"agent server {self.url}{path} unreachable: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise RemoteError(f"agent server {self.url}{path} answered {response.status_code}: {str(detail)[:300]}")
        return response.json()

    def _act(self, obs: np.ndarray) -> np.ndarray:
        inputs = self.stack.push(obs)
        out = []
        for start in range(0, inputs.shape[0], self.max_batch):
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(inputs[start : start + self.max_batch]), allow_pickle=False)
            answer = self._call("POST", "/act", content=buf.getvalue(), headers={"content-type": NPY_TYPE})
            out.append(np.asarray(answer["actions"], dtype=np.int64))
        actions = np.concatenate(out)
        if actions.shape != (inputs.shape[0],):
            raise RemoteError(
                f"agent server {self.url} returned {actions.shape[0]} actions for {inputs.shape[0]} observations"
            )
        return actions

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
