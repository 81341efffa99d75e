"""The OpenAI completions request, validated strictly: an unknown field, or a known one neo cannot honour, is a 400.

Fields follow https://platform.openai.com/docs/api-reference/completions; `top_k` is neo's extension. Responses are
built as plain dicts in `neo.serve.app` (they only need to serialise).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class CompletionRequest(BaseModel):
    """POST /v1/completions."""

    model_config = ConfigDict(extra="forbid")

    model: str
    prompt: str | list[str] | list[int] | list[list[int]] = ""
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default; None = up to the context
    temperature: float = Field(1.0, ge=0.0, le=2.0)  # 0 = greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)  # neo's extension: keep the k most likely tokens (0 = all)
    n: int = Field(1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63 - 128)  # choice i of n samples with seed + i
    echo: bool = False
    best_of: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    suffix: str | None = None
    user: str | None = None  # an end-user id for the caller's own records; not used

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: Any) -> Any:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return value

    @model_validator(mode="after")
    def _supported(self) -> CompletionRequest:
        if self.presence_penalty or self.frequency_penalty:
            raise ValueError("presence_penalty and frequency_penalty are not supported by neo serve (pass 0)")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported by neo serve")
        if self.suffix:
            raise ValueError("suffix is not supported by neo serve (the models are left-to-right only)")
        if self.best_of not in (None, self.n):
            raise ValueError("best_of is not supported by neo serve (leave it out or set it equal to n)")
        if self.echo and self.logprobs is not None:
            raise ValueError("echo with logprobs (the prompt's log-probabilities) is not supported by neo serve")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options needs stream: true")
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt is an empty list; pass a string or a list of strings")
        return self

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
