"""Canonical JSON (docs/PROTOCOL.md section 8.1): what ECMAScript JSON.stringify writes after sorting keys.

Used for signed feed message bodies, mutable key hashes and task hashes, so its bytes must
match the original daemon's exactly:
- keys sorted by UTF-16 code units at every depth; no whitespace;
- non-ASCII characters written as themselves; lone surrogates as \\udxxx;
- numbers as ECMAScript Number-to-String: 1.0 -> 1, 1e-7 -> 1e-7, 1e21 -> 1e+21, -0 -> 0.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def canonical_json(value: Any) -> str:
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


def canonical_sha1(value: Any) -> str:
    """SHA-1 hex of the canonical JSON's UTF-8 bytes (mutable ids, task hashes)."""
    return hashlib.sha1(canonical_json(value).encode("utf-8")).hexdigest()


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value) if abs(value) < 2**53 else js_number(float(value)))
    elif isinstance(value, float):
        out.append(js_number(value))
    elif isinstance(value, str):
        out.append(_js_string(value))
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value, key=_utf16_key)):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
            if i:
                out.append(",")
            out.append(_js_string(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    else:
        raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _js_string(s: str) -> str:
    text = json.dumps(s, ensure_ascii=False)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def js_number(x: float) -> str:
    """ECMAScript Number::toString for a finite double."""
    if math.isnan(x) or math.isinf(x):
        raise ValueError("NaN and Infinity are not JSON")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    # repr gives the shortest round-trip digits; re-place the decimal point the ECMAScript way.
    mantissa, _, exp_text = repr(abs(x)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    # n: position of the decimal point relative to the first significant digit.
    n = len(int_part) + (int(exp_text) if exp_text else 0)
    if int_part == "0":
        n -= len(frac_part) - len(frac_part.lstrip("0")) + 1
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    exp = f"e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + digits[0] + ("." + digits[1:] if k > 1 else "") + exp
