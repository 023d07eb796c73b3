"""Gas policy: what an EIP-1559 transaction offers to pay, from the chain's fees and the operator's limits.

A local anvil, a consortium chain with free gas and a public testnet want different fees, so they
are configuration (``gas`` in the stack file), not code. Pure: the chain client feeds in what the
node reports and gets fees back, or a ``GasPolicyError`` naming the limit that stopped it.
"""

from __future__ import annotations

from dataclasses import dataclass

GWEI = 10**9
DEFAULT_PRIORITY_FEE = 1 * GWEI  # when the node cannot suggest one and none is configured


class GasPolicyError(ValueError):
    """The chain's fees are above what the operator allowed."""


@dataclass(frozen=True)
class GasPolicy:
    """Fees per gas offered with each transaction.

    - ``base_fee_multiplier``: headroom over the latest base fee (2 covers several full blocks).
    - ``priority_fee_gwei``: a fixed tip; ``None`` takes the node's suggestion
      (``eth_maxPriorityFeePerGas``). A consortium chain with free gas sets 0.
    - ``max_fee_gwei``: the most ever offered per gas; ``None`` is no cap. When the base fee
      plus the tip is above it, nothing is sent and the error says so.
    """

    base_fee_multiplier: float = 2.0
    priority_fee_gwei: float | None = None
    max_fee_gwei: float | None = None

    def __post_init__(self) -> None:
        if self.base_fee_multiplier < 1:
            raise GasPolicyError(
                f"gas.base_fee_multiplier is {self.base_fee_multiplier}: it must be at least 1, "
                "or transactions are not mined when the base fee rises"
            )
        for name in ("priority_fee_gwei", "max_fee_gwei"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise GasPolicyError(f"gas.{name} is {value}: it must be 0 or more")

    def fees(self, base_fee: int, suggested_priority: int | None) -> tuple[int, int]:
        """(maxFeePerGas, maxPriorityFeePerGas) in wei for a block whose base fee is ``base_fee``."""
        if self.priority_fee_gwei is not None:
            priority = int(self.priority_fee_gwei * GWEI)
        elif suggested_priority is not None:
            priority = suggested_priority
        else:
            priority = DEFAULT_PRIORITY_FEE
        max_fee = int(self.base_fee_multiplier * base_fee) + priority
        if self.max_fee_gwei is not None:
            cap = int(self.max_fee_gwei * GWEI)
            if base_fee + priority > cap:
                raise GasPolicyError(
                    f"the chain's base fee ({base_fee / GWEI:.3f} gwei) plus the tip "
                    f"({priority / GWEI:.3f} gwei) is above gas.max_fee_gwei "
                    f"({self.max_fee_gwei:g}); raise the cap in the stack configuration or wait "
                    "for fees to fall"
                )
            max_fee = min(max_fee, cap)
            priority = min(priority, max_fee)
        return max_fee, priority
