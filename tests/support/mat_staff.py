"""The person at the cot while ``edge mat record`` runs, for tests against the emulated mat."""

from __future__ import annotations

from collections.abc import Callable

from edge.sim.mat_emulator import MatModel


def staff(mat: MatModel, posture: str, said: list[str] | None = None) -> Callable[[str], None]:
    """Does what the tool asks: lays the child on the mat in ``posture`` when told to (or
    turns the child already there); keeps every instruction in ``said``."""

    def act(text: str) -> None:
        if said is not None:
            said.append(text)
        if "lay the child" in text:
            if mat.scene.infant is None:
                mat.lie_down(posture)  # type: ignore[arg-type]
            else:
                mat.roll_to(posture)  # type: ignore[arg-type]

    return act
