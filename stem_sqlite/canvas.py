"""Canvas: run signatures together (group), one after another (chain), or together and
then a callback with all their results (chord).

A group needs a result backend: its descriptor is stored when it is applied, and each
member reports its terminal state (succeeded, failed, cancelled) there. Workers fire a
chord's callback exactly once, with the header results in header order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgument
from .ids import new_id
from .model import GroupDescriptor
from .options import HEADER_GROUP_ID, META_GROUP_INDEX
from .producer import build_envelope
from .result import AsyncResult
from .signature import Signature
from .timeutil import Duration

if TYPE_CHECKING:
    from .app import Stem

META_CHAIN = "stem.chain"
META_CHORD_CALLBACK = "stem.chord.callbackEnvelope"


def _signatures(items: Iterable[Any], what: str) -> list[Signature]:
    signatures = list(items)
    for item in signatures:
        if not isinstance(item, Signature):
            raise InvalidArgument(f"{what} takes signatures (task.s(...)), got {item!r}")
    return signatures


def _app_of(signatures: Sequence[Signature], app: Stem | None) -> Stem:
    target = app or next((s.app for s in signatures if s.app is not None), None)
    if target is None:
        raise InvalidArgument("no app: build the signatures with task.s(...) or pass app=")
    return target


class GroupResult:
    """The results of a group's members, in the order of its signatures."""

    def __init__(self, id: str, results: list[AsyncResult], app: Stem) -> None:
        self.id = id
        self.results = results
        self._app = app

    def get(self, timeout: Duration | None = None) -> list[Any]:
        """Every member's return value, in member order; ``TaskFailed`` if one failed."""
        return [result.get(timeout) for result in self.results]

    def ready(self) -> bool:
        return all(result.ready() for result in self.results)

    def completed_count(self) -> int:
        group = self._app.backend.get_group(self.id)
        return group.completed if group else 0

    def __iter__(self) -> Any:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)


def _publish_group(
    app: Stem, signatures: list[Signature], meta: dict[str, Any]
) -> tuple[str, list[AsyncResult]]:
    if not signatures:
        raise InvalidArgument("a group needs at least one signature")
    group_id = new_id()
    envelopes = []
    for index, signature in enumerate(signatures):
        options = signature.enqueue_options()
        headers = {**(options.headers or {}), HEADER_GROUP_ID: group_id}
        member_meta = {**(options.meta or {}), META_GROUP_INDEX: index, "groupId": group_id}
        envelopes.append(
            build_envelope(
                signature.name,
                signature.args,
                signature.kwargs,
                options.merged(headers=headers, meta=member_meta),
                task_defaults=app.tasks.get(signature.name),
                clock=app.clock,
            )
        )
    app.backend.init_group(GroupDescriptor(group_id, len(envelopes), meta))
    app.broker.publish_many(envelopes)  # all members or none
    return group_id, [AsyncResult(e.id, app) for e in envelopes]


@dataclass(frozen=True)
class group:  # noqa: N801 - Celery's name
    """Run signatures in parallel; ``apply_async().get()`` lists their results in order."""

    signatures: tuple[Signature, ...]

    def __init__(self, *signatures: Any) -> None:
        items = (
            signatures[0]
            if len(signatures) == 1 and not isinstance(signatures[0], Signature)
            else signatures
        )
        object.__setattr__(self, "signatures", tuple(_signatures(items, "group")))

    def apply_async(self, app: Stem | None = None) -> GroupResult:
        target = _app_of(self.signatures, app)
        group_id, results = _publish_group(target, list(self.signatures), {})
        return GroupResult(group_id, results, target)

    def delay(self) -> GroupResult:
        return self.apply_async()


@dataclass(frozen=True)
class chain:  # noqa: N801 - Celery's name
    """Run signatures one after another, each receiving the previous result as its first
    argument. The result is the last task's; if one fails, the rest fail with it."""

    signatures: tuple[Signature, ...]

    def __init__(self, *signatures: Signature) -> None:
        object.__setattr__(self, "signatures", tuple(_signatures(signatures, "chain")))
        if not self.signatures:
            raise InvalidArgument("a chain needs at least one signature")

    def apply_async(self, app: Stem | None = None) -> AsyncResult:
        target = _app_of(self.signatures, app)
        # Every step gets its id now, so the chain's result is known before it runs.
        steps = [
            s if s.enqueue_options().task_id else s.set(task_id=new_id()) for s in self.signatures
        ]
        first, rest = steps[0], steps[1:]
        options = first.enqueue_options()
        meta = {**(options.meta or {}), META_CHAIN: [s.to_dict() for s in rest]}
        target.enqueue(
            first.name, first.args, first.kwargs, options.merged(meta=meta), strict=False
        )
        last_id = steps[-1].enqueue_options().task_id
        assert last_id is not None
        return AsyncResult(last_id, target)

    def delay(self) -> AsyncResult:
        return self.apply_async()


@dataclass(frozen=True)
class chord:  # noqa: N801 - Celery's name
    """Run the header signatures in parallel, then the callback once, with the list of
    their results (in header order) as its first argument. If a header task fails for
    good, the callback does not run: it is marked failed and its link_error runs."""

    header: tuple[Signature, ...]
    callback: Signature

    def __init__(self, header: Iterable[Signature], callback: Signature) -> None:
        object.__setattr__(self, "header", tuple(_signatures(header, "chord header")))
        if not isinstance(callback, Signature):
            raise InvalidArgument(f"a chord callback must be a signature, got {callback!r}")
        object.__setattr__(self, "callback", callback)

    def apply_async(self, app: Stem | None = None) -> AsyncResult:
        target = _app_of([*self.header, self.callback], app)
        options = self.callback.enqueue_options()
        callback_id = options.task_id or new_id()
        callback = build_envelope(
            self.callback.name,
            self.callback.args,
            self.callback.kwargs,
            options.merged(task_id=callback_id),
            task_defaults=target.tasks.get(self.callback.name),
            clock=target.clock,
        )
        _publish_group(target, list(self.header), {META_CHORD_CALLBACK: callback.to_dict()})
        return AsyncResult(callback_id, target)

    def delay(self) -> AsyncResult:
        return self.apply_async()


__all__ = ["META_CHAIN", "META_CHORD_CALLBACK", "GroupResult", "chain", "chord", "group"]
