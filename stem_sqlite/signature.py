"""A description of one task call, storable as JSON: used for links and the canvas."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .codec import check_json
from .errors import InvalidArgument
from .options import EnqueueOptions, RetryPolicy
from .timeutil import iso, parse_iso, require_aware

if TYPE_CHECKING:
    from .app import Stem
    from .result import AsyncResult

_DATETIME_OPTIONS = ("eta",)
_POLICY_OPTIONS = ("retry_policy", "retry_policy_publish")
_LINK_OPTIONS = ("link", "link_error")


def options_to_json(options: dict[str, Any]) -> dict[str, Any]:
    """apply_async keywords as JSON values (datetimes as ISO text, policies as dicts)."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            value = {"$datetime": iso(require_aware(value, name=key))}
        elif isinstance(value, RetryPolicy):
            value = value.to_dict()
        elif key in _LINK_OPTIONS:
            value = [sig.to_dict() for sig in as_signatures(value, key)]
        out[key] = value
    check_json(out, where="signature options")
    return out


def options_from_json(data: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`options_to_json`."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and "$datetime" in value:
            value = parse_iso(value["$datetime"])
        elif key in _POLICY_OPTIONS and isinstance(value, dict):
            value = RetryPolicy.from_dict(value)
        elif key in _LINK_OPTIONS:
            value = [Signature.from_dict(item) for item in value]
        out[key] = value
    return out


@dataclass(frozen=True)
class Signature:
    """A task name with its arguments and enqueue options (the keywords of apply_async)."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    app: Stem | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidArgument(f"a signature needs a task name, got {self.name!r}")
        object.__setattr__(self, "args", tuple(self.args))
        EnqueueOptions().merged(**self.options)  # refuse unknown option names now
        object.__setattr__(self, "options", options_to_json(self.options))

    def set(self, **options: Any) -> Signature:
        """A copy with more (or replaced) enqueue options."""
        merged = {**options_from_json(self.options), **options}
        return Signature(self.name, self.args, self.kwargs, merged, self.app)

    def enqueue_options(self) -> EnqueueOptions:
        return EnqueueOptions().merged(**options_from_json(self.options))

    def apply_async(self, app: Stem | None = None, **overrides: Any) -> AsyncResult:
        """Enqueue this call (through ``app``, else the app it was made by)."""
        target = app or self.app
        if target is None:
            raise InvalidArgument(
                f"signature {self.name!r} is not bound to an app; pass app= to apply_async"
            )
        options = self.enqueue_options().merged(**overrides)
        return target.enqueue(self.name, self.args, self.kwargs, options=options, strict=False)

    def delay(self) -> AsyncResult:
        return self.apply_async()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "args": list(self.args),
            "kwargs": self.kwargs,
            "options": self.options,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], app: Stem | None = None) -> Signature:
        return cls(
            name=data["name"],
            args=tuple(data.get("args") or ()),
            kwargs=dict(data.get("kwargs") or {}),
            options=options_from_json(dict(data.get("options") or {})),
            app=app,
        )


def as_signatures(value: Any, what: str) -> list[Signature]:
    """One signature or a list of them; anything else is refused with a clear error."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if isinstance(item, Signature):
            out.append(item)
        elif isinstance(item, dict) and "name" in item:
            out.append(Signature.from_dict(item))
        else:
            raise InvalidArgument(
                f"{what} takes signatures (e.g. task.signature(1, 2) or task.s(1, 2)), got {item!r}"
            )
    return out
