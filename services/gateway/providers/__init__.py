"""Provider adapters: one per broker (``kis``, ``kiwoom``) behind the ``base.ProviderAdapter`` protocol."""

from __future__ import annotations

from services.gateway.providers.base import ProviderAdapter
from services.gateway.providers.kis import KisAdapter
from services.gateway.providers.kiwoom import KiwoomAdapter
from services.settings import KisSettings, KiwoomSettings, ProviderSettings


def make_adapter(settings: ProviderSettings) -> ProviderAdapter:
    """The adapter for one credential's settings (a pool member's, or a provider's own)."""
    if isinstance(settings, KisSettings):
        return KisAdapter(settings)
    if isinstance(settings, KiwoomSettings):
        return KiwoomAdapter(settings)
    raise TypeError(f"no adapter for {type(settings).__name__}")
