"""The demo shop's data: a seeded, realistic catalogue (products, reviews) and its schema.

Deterministic for a seed: the same seed gives the same rows, so runs compare. Sizes default
to 2,000 products in 8 categories with 0 to 10 reviews each (about 10,000 reviews): enough
that a query per product hurts and a scan per request shows, small enough to seed in about
a second.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["CATEGORIES", "metadata", "orders", "products", "reviews", "rows", "seed"]

CATEGORIES = ("books", "garden", "kitchen", "toys", "outdoor", "music", "office", "pets")

_ADJECTIVES = (
    "classic", "compact", "deluxe", "durable", "eco", "ergonomic", "essential", "handmade",
    "heavy-duty", "lightweight", "modern", "portable", "premium", "rustic", "smart", "vintage",
)  # fmt: skip
_NOUNS = {
    "books": ("novel", "cookbook", "atlas", "anthology", "field guide", "notebook"),
    "garden": ("trowel", "planter", "hose", "pruner", "seed kit", "birdhouse"),
    "kitchen": ("skillet", "kettle", "knife set", "blender", "teapot", "grater"),
    "toys": ("puzzle", "robot", "kite", "board game", "yo-yo", "building set"),
    "outdoor": ("tent", "lantern", "backpack", "hammock", "stove", "compass"),
    "music": ("ukulele", "metronome", "harmonica", "drum pad", "capo", "songbook"),
    "office": ("desk lamp", "stapler", "planner", "monitor stand", "pen set", "chair mat"),
    "pets": ("leash", "scratching post", "bowl", "bed", "feeder", "chew toy"),
}
_WORDS = (
    "sturdy", "gift", "bright", "quiet", "fast", "simple", "warm", "clever", "colourful",
    "reliable", "comfortable", "weatherproof", "washable", "adjustable", "foldable", "spare",
)  # fmt: skip
_REVIEW = (
    "works as described", "arrived quickly", "smaller than expected", "great value",
    "would buy again", "broke after a month", "my kids love it", "solid build",
)  # fmt: skip


# Table names of their own: the demo may run in a database that holds other tables
# (``--db``), and it rewrites these freely.
PRODUCTS = "brownout_demo_products"
REVIEWS = "brownout_demo_reviews"
ORDERS = "brownout_demo_orders"


def metadata() -> Any:
    """The schema (SQLAlchemy Core tables), built on demand so importing the demo does not
    import SQLAlchemy."""
    from sqlalchemy import Column, Float, ForeignKey, Integer, MetaData, String, Table, Text

    md = MetaData()
    Table(
        PRODUCTS,
        md,
        Column("id", Integer, primary_key=True),
        Column("name", String(120), nullable=False),
        Column("category", String(40), nullable=False, index=True),
        Column("price_cents", Integer, nullable=False),
        Column("description", Text, nullable=False),
    )
    Table(
        REVIEWS,
        md,
        Column("id", Integer, primary_key=True),
        Column("product_id", Integer, ForeignKey(f"{PRODUCTS}.id"), nullable=False, index=True),
        Column("rating", Integer, nullable=False),
        Column("body", Text, nullable=False),
    )
    Table(
        ORDERS,
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("product_id", Integer, nullable=False),
        Column("quantity", Integer, nullable=False),
        Column("status", String(20), nullable=False),
        Column("created_s", Float, nullable=False),
    )
    return md


def products(md: Any) -> Any:
    return md.tables[PRODUCTS]


def reviews(md: Any) -> Any:
    return md.tables[REVIEWS]


def orders(md: Any) -> Any:
    return md.tables[ORDERS]


def rows(
    *, seed: int = 7, n_products: int = 2000, max_reviews: int = 10
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The catalogue's rows: (products, reviews), deterministic for ``seed``."""
    rng = random.Random(seed)
    prods: list[dict[str, Any]] = []
    revs: list[dict[str, Any]] = []
    for pid in range(1, n_products + 1):
        category = CATEGORIES[(pid - 1) % len(CATEGORIES)]
        name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS[category])}"
        words = " ".join(rng.choice(_WORDS) for _ in range(12))
        prods.append(
            {
                "id": pid,
                "name": name.title(),
                "category": category,
                "price_cents": rng.randrange(299, 19_999),
                "description": f"A {name} for every {category} lover: {words}.",
            }
        )
        for _ in range(rng.randint(0, max_reviews)):
            revs.append(
                {
                    "id": len(revs) + 1,
                    "product_id": pid,
                    "rating": rng.choices((1, 2, 3, 4, 5), weights=(1, 1, 2, 4, 5))[0],
                    "body": rng.choice(_REVIEW),
                }
            )
    return prods, revs


async def seed(engine: Any, md: Any, *, seed: int = 7, n_products: int = 2000) -> int:
    """Create the tables and fill the catalogue; returns the number of products. A
    catalogue of ``n_products`` already there is kept (it is the same for the same seed);
    one of another size is replaced. The orders of an earlier run are cleared."""
    from sqlalchemy import func, select

    async with engine.begin() as conn:
        await conn.run_sync(md.create_all)
        count = (await conn.execute(select(func.count()).select_from(products(md)))).scalar_one()
        await conn.execute(orders(md).delete())
        if count == n_products:
            return int(count)
        if count:  # another run's catalogue (another size): start again
            await conn.execute(reviews(md).delete())
            await conn.execute(products(md).delete())
        prods, revs = rows(seed=seed, n_products=n_products)
        await conn.execute(products(md).insert(), prods)
        if revs:
            await conn.execute(reviews(md).insert(), revs)
        return len(prods)
