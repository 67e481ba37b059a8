"""migrations/schema.sql must be what the migrations make, so a reader can trust it."""

from __future__ import annotations

import asyncio
import difflib

from tests.integration import schema_snapshot


async def test_the_committed_schema_is_what_the_migrations_make(dsn: str) -> None:
    made = await asyncio.to_thread(schema_snapshot.dump, dsn)
    committed = schema_snapshot.SNAPSHOT_PATH.read_text()
    if made != committed:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                made.splitlines(keepends=True),
                "migrations/schema.sql (committed)",
                "the migrations applied",
                n=2,
            )
        )
        raise AssertionError(f"migrations/schema.sql is out of date: run make schema\n{diff}")


def test_the_dump_is_normalised() -> None:
    raw = (
        "--\n-- PostgreSQL database dump\n--\n\n\\restrict AbC123\n\n"
        "-- Dumped from database version 18.1\n-- Dumped by pg_dump version 18.6\n\n"
        "SET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n"
        "\n\n\n--\n-- Name: t; Type: TABLE; Schema: public; Owner: -\n--\n\n"
        "CREATE TABLE public.t (\n    id integer   \n);\n\n\n\n"
        "CREATE FUNCTION public.f() RETURNS void\n    LANGUAGE plpgsql\n    AS $$\n"
        "BEGIN\n    -- a comment in a body stays\nEND;\n$$;\n\n"
        "\\unrestrict AbC123\n"
    )
    assert schema_snapshot.normalise(raw) == (
        f"{schema_snapshot.HEADER}\n"
        "CREATE TABLE public.t (\n    id integer\n);\n\n"
        "CREATE FUNCTION public.f() RETURNS void\n    LANGUAGE plpgsql\n    AS $$\n"
        "BEGIN\n    -- a comment in a body stays\nEND;\n$$;\n"
    )
