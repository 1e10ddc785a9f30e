"""The demo: a shop with a naive and a guarded build, and the payments service it calls.

``brownout demo`` starts them on loopback, profiles, predicts, simulates and load-tests
them, and writes the report.
"""

from ._payments import create_payments as create_payments
from ._shop import VARIANTS as VARIANTS
from ._shop import PaymentFailed as PaymentFailed
from ._shop import create_shop as create_shop
from ._shop import database_url as database_url

__all__ = ["VARIANTS", "PaymentFailed", "create_payments", "create_shop", "database_url"]
