"""CSV cells a spreadsheet would evaluate are made inert; the rest is kept as is."""

from __future__ import annotations

import csv
import io

import pytest
from elevate_request_api import csvexport
from elevate_request_api.csvexport import safe_cell


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("restart the API", "restart the API"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
        (3, "3"),
    ],
)
def test_safe_cell(value: object, cell: str) -> None:
    assert safe_cell(value) == cell


def test_header_names_every_column_once() -> None:
    names = next(csv.reader(io.StringIO(csvexport.header())))
    assert names == [name for name, _ in csvexport.COLUMNS]
    assert len(set(names)) == len(names)
