"""Loss scalers for fp16 training (Megatron's semantics)."""
from __future__ import annotations


class ConstantGradScaler:
    """A fixed loss scale (``--loss-scale``)."""

    def __init__(self, scale: float) -> None:
        if scale <= 0:
            raise ValueError(f"--loss-scale must be positive, got {scale}")
        self._scale = float(scale)

    @property
    def scale(self) -> float:
        return self._scale

    @property
    def inv_scale(self) -> float:
        return 1.0 / self._scale

    def update(self, found_inf: bool) -> None:
        """A static scale never changes."""

    def state_dict(self) -> dict:
        return {"scale": self._scale}

    def load_state_dict(self, state: dict) -> None:
        self._scale = float(state["scale"])


class DynamicGradScaler(ConstantGradScaler):
    """Halve the scale after ``hysteresis`` overflowing steps (not below ``min_scale``);
    double it after ``growth_interval`` clean steps in a row."""

    def __init__(self, initial_scale: float, min_scale: float, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 1000,
                 hysteresis: int = 2) -> None:
        super().__init__(initial_scale)
        if not 0 < min_scale <= initial_scale:
            raise ValueError(f"--min-loss-scale ({min_scale}) must be in (0, "
                             f"--initial-loss-scale ({initial_scale})]")
        if growth_factor <= 1 or not 0 < backoff_factor < 1:
            raise ValueError("loss scaler needs growth_factor > 1 and 0 < backoff_factor < 1")
        if growth_interval < 1 or hysteresis < 1:
            raise ValueError("--loss-scale-window and --hysteresis must be >= 1")
        self.min_scale = float(min_scale)
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.hysteresis = hysteresis
        self._growth_tracker = 0
        self._hysteresis_tracker = hysteresis

    def update(self, found_inf: bool) -> None:
        if found_inf:
            self._growth_tracker = 0
            self._hysteresis_tracker -= 1
            if self._hysteresis_tracker <= 0:
                self._scale = max(self._scale * self.backoff_factor, self.min_scale)
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self.growth_interval:
                self._growth_tracker = 0
                self._hysteresis_tracker = self.hysteresis
                self._scale *= self.growth_factor

    def state_dict(self) -> dict:
        return {"scale": self._scale, "growth_tracker": self._growth_tracker,
                "hysteresis_tracker": self._hysteresis_tracker}

    def load_state_dict(self, state: dict) -> None:
        self._scale = float(state["scale"])
        self._growth_tracker = int(state["growth_tracker"])
        self._hysteresis_tracker = int(state["hysteresis_tracker"])
