"""Vectorised parsing of prediction-file box lines: whitespace- or comma-separated float literals.

The grammar (``docs/evaluation.md``): a line is a list of tokens separated by spaces, tabs,
carriage returns or commas; every token must be a float literal (``[+-]?(d+[.d*]|.d+)``, an
optional exponent ``[eE][+-]?d+``, or ``nan`` / ``inf`` / ``infinity`` in any case). A line with a
token that is not one, or with fewer than the required columns, is invalid.

Speed (3 million lines in about a second) comes from working on the whole text at once:

* token boundaries from byte masks over each chunk of text;
* a token of at most 8 characters (``-1234.5``, ``0.912345``) is read with one unaligned 8-byte
  load; the dot and sign are masked out and the eight ASCII digits combined with three
  multiplications (the SWAR method of simdjson's ``parse_eight_digits_unrolled``), which checks
  at the same time that the rest of the token is digits;
* longer plain decimals (up to 15 digits) sum their digits exactly in int64;
* anything else (exponents, nan/inf, longer mantissas, junk) is checked with a regular expression
  and read with ``float()``, one token at a time.

Every value is the correctly rounded double of its decimal literal (an exact integer mantissa
divided once by an exact power of ten), as ``float()`` and MATLAB's ``str2num`` give it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

__all__ = [
    "ParsedLines",
    "parse_lines",
    "LINE_OK",
    "LINE_TOO_FEW",
    "LINE_NOT_NUMERIC",
    "LINE_BLANK",
]

LINE_OK, LINE_TOO_FEW, LINE_NOT_NUMERIC, LINE_BLANK = 0, 1, 2, 3

# bytes of text per vectorised pass: temporaries stay small (below a few MB), which avoids the
# page faults (and transparent huge pages) of large fresh allocations
_CHUNK = 1 << 18
_PAD = 8  # spaces before each chunk, so that every token has 8 bytes up to its end

_MAX_DIGITS = 15  # 10**15 < 2**53: the mantissa and all its partial sums are exact
_POW10 = 10.0 ** np.arange(23)  # exact doubles up to 1e22
_POW10_INT = 10 ** np.arange(19, dtype=np.int64)
_FLOAT_RE = re.compile(
    rb"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)", re.IGNORECASE
)

# 8-byte little-endian words: byte j (0 = first in memory) is bits 8j..8j+7
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_KEEP = np.array([0] + [(2**64 - 1) << (8 * (8 - n)) & (2**64 - 1) for n in range(1, 9)], np.uint64)
_FILL = np.array([0x3030303030303030 & ~int(k) for k in _KEEP], dtype=np.uint64)  # '0' elsewhere
# bytes before the dot at byte 7 - d; d = 8 marks "no dot" (keep everything)
_BEFORE_DOT = np.array([(1 << (8 * (7 - d))) - 1 for d in range(8)] + [2**64 - 1], np.uint64)
_AFTER_DOT = np.concatenate([_KEEP[:8], [np.uint64(0)]])


class ParsedLines(NamedTuple):
    """values: (L, ncols) float64, the first ``ncols`` numbers of each line (undefined where the
    line is not LINE_OK); status: (L,) int8, LINE_OK / LINE_TOO_FEW / LINE_NOT_NUMERIC /
    LINE_BLANK (no token)."""

    values: np.ndarray
    status: np.ndarray


def parse_lines(text: bytes, ncols: int = 5) -> ParsedLines:
    """Parse ``text``: lines each terminated by ``b"\\n"`` (the last one too).

    Returns one row per line (``text.count(b"\\n")`` rows).
    """
    if text and not text.endswith(b"\n"):
        raise ValueError("parse_lines: the text must end with a newline")
    nlines = text.count(b"\n")
    values = np.empty((nlines, ncols), dtype=np.float64)
    status = np.empty(nlines, dtype=np.int8)
    start, row, n = 0, 0, len(text)
    while start < n:
        stop = min(start + _CHUNK, n)
        if stop < n:  # cut after a newline
            cut = text.rfind(b"\n", start, stop)
            stop = cut + 1 if cut >= start else text.find(b"\n", stop) + 1
        rows = _parse_chunk(text[start:stop], ncols, values[row:], status[row:])
        row += rows
        start = stop
    return ParsedLines(values, status)


def _parse_chunk(chunk: bytes, ncols: int, values: np.ndarray, status: np.ndarray) -> int:
    """Parse one chunk (whole lines) into the first rows of ``values``/``status``; returns the
    number of lines."""
    padded = b" " * _PAD + chunk
    a = np.frombuffer(padded, dtype=np.uint8)[_PAD:]
    # separators: space, comma, \t \n \v \f \r (9..13); uint8 arithmetic wraps below 9
    sep = a == 32
    sep |= a == 44
    sep |= (a - 9) < 5
    tok = ~sep
    startm = tok.copy()
    startm[1:] &= sep[:-1]
    starts = np.flatnonzero(startm)
    ends = np.flatnonzero(tok[:-1] & sep[1:])  # inclusive; the chunk ends with a newline
    newlines = np.flatnonzero(a == 10)
    nlines = newlines.size

    vals, ok = _eight_byte_tokens(padded, a, starts, ends)
    rest = np.flatnonzero(~ok)
    if rest.size:
        vals[rest], ok[rest] = _long_tokens(a, starts[rest], ends[rest])

    # tokens -> lines
    before = np.searchsorted(starts, newlines)  # tokens before each newline
    first_tok = np.empty(nlines, dtype=np.int64)
    first_tok[:1] = 0
    first_tok[1:] = before[:-1]
    line_ntok = before - first_tok
    st = status[:nlines]
    st[:] = LINE_OK
    st[line_ntok < ncols] = LINE_TOO_FEW
    if rest.size and not ok[rest].all():
        bad_cum = np.zeros(starts.size + 1, dtype=np.int64)
        np.cumsum(~ok, out=bad_cum[1:])
        st[bad_cum[before] > bad_cum[first_tok]] = LINE_NOT_NUMERIC
    st[line_ntok == 0] = LINE_BLANK
    out = values[:nlines]
    if starts.size == ncols * nlines and (line_ntok == ncols).all():
        out[:] = vals.reshape(nlines, ncols)
    else:
        good = np.flatnonzero(st == LINE_OK)
        out[good] = vals[first_tok[good, None] + np.arange(ncols)]
    return nlines


def _eight_byte_tokens(
    padded: bytes, a: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Values of tokens of at most 8 characters ``[+-]digits[.digits]``; ok is False for every
    other token (left for :func:`_long_tokens`)."""
    ntok = starts.size
    first = a[starts]
    negative = first == 45
    lead_sign = negative | (first == 43)
    # the 8 bytes ending at each token's last character (unaligned loads); the padded index of
    # a[i] is i + 8, so the word ending there starts at padded[i + 1]
    words = np.ndarray(shape=(len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
    w = words.take(ends + 1)
    # the dot of each token: usually exactly one per token, in order
    dots = np.flatnonzero(a == 46)
    if dots.size == ntok and ntok and (dots >= starts).all() and (dots <= ends).all():
        decimals = ends - dots
        ndig = dots - starts
        ndig -= lead_sign
        ndig += decimals
        dec = np.minimum(decimals, 7)  # a simple token has at most 7 (longer ones: not ok)
        low = w & _BEFORE_DOT[dec]
        low <<= np.uint64(8)  # drop the dot: the bytes before it move up by one
        w &= _AFTER_DOT[dec]
        w |= low
    else:
        j = np.searchsorted(dots, starts)
        dot = np.append(dots, a.size)[j]
        has_dot = dot <= ends
        decimals = np.where(has_dot, ends - dot, 0)
        ndig = ends - starts + 1 - has_dot - lead_sign
        dec = np.where(has_dot, np.minimum(decimals, 7), 8)  # 8: no dot, keep everything
        low = w & _BEFORE_DOT[dec]
        low <<= np.where(has_dot, np.uint64(8), np.uint64(0))
        w &= _AFTER_DOT[dec]
        w |= low
    ok = ends - starts < 8
    ok &= ndig >= 1
    # keep the last ndig bytes, '0' before them
    nd = np.clip(ndig, 0, 8, out=ndig)
    w &= _KEEP[nd]
    w |= _FILL[nd]
    # every byte an ASCII digit? (simdjson's is_made_of_eight_digits_fast)
    check = w + np.uint64(0x0606060606060606)
    check &= np.uint64(0xF0F0F0F0F0F0F0F0)
    check >>= np.uint64(4)
    check |= w & np.uint64(0xF0F0F0F0F0F0F0F0)
    ok &= check == np.uint64(0x3333333333333333)
    # eight ASCII digits -> integer (first byte most significant)
    w &= np.uint64(0x0F0F0F0F0F0F0F0F)
    w *= np.uint64(2561)
    w >>= np.uint64(8)
    w &= np.uint64(0x00FF00FF00FF00FF)
    w *= np.uint64(6553601)
    w >>= np.uint64(16)
    w &= np.uint64(0x0000FFFF0000FFFF)
    w *= np.uint64(42949672960001)
    w >>= np.uint64(32)
    vals = w.astype(np.float64)
    np.minimum(decimals, 22, out=decimals)
    vals /= _POW10[decimals]
    np.negative(vals, out=vals, where=negative)
    return vals, ok


def _long_tokens(
    a: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Values of the given tokens: plain decimals of up to 15 digits vectorised (exact int64
    mantissa), the rest through a regular expression and ``float()``."""
    n = starts.size
    length = ends - starts + 1
    # the tokens' characters, contiguous
    offsets = np.cumsum(length) - length
    pos = np.repeat(starts - offsets, length) + np.arange(int(length.sum()))
    c = a[pos]
    digit = (c - 48) < 10
    dotm = c == 46
    tok_of = np.repeat(np.arange(n), length)
    ndig = np.bincount(tok_of, weights=digit, minlength=n).astype(np.int64)
    ndot = np.bincount(tok_of, weights=dotm, minlength=n).astype(np.int64)
    first = c[offsets]
    negative = first == 45
    lead_sign = negative | (first == 43)
    simple = (length == ndig + ndot + lead_sign) & (ndot <= 1) & (ndig >= 1) & (ndig <= _MAX_DIGITS)
    # digits after the dot: positions after the token's dot
    dot_pos = np.full(n, -1, dtype=np.int64)
    dot_idx = np.flatnonzero(dotm)
    dot_pos[tok_of[dot_idx]] = dot_idx
    decimals = np.where(dot_pos >= 0, offsets + length - 1 - dot_pos, 0)
    simple &= decimals <= 22
    # mantissa: digit * 10**(digits after it in its token), summed per token in int64
    dpos = np.flatnonzero(digit)
    cum_digit = np.cumsum(digit)
    last_digit = np.cumsum(ndig)  # cum_digit at each token's end
    place = np.repeat(last_digit, ndig) - cum_digit[dpos]
    np.minimum(place, 18, out=place)
    weights = (c[dpos].astype(np.int64) - 48) * _POW10_INT[place]
    running = np.zeros(dpos.size + 1, dtype=np.int64)
    np.cumsum(weights, out=running[1:])  # wraps modulo 2**64: differences stay exact
    mant = (running[last_digit] - running[last_digit - ndig]).astype(np.float64)
    vals = mant / _POW10[np.minimum(decimals, 22)]
    vals[negative] *= -1.0
    ok = simple.copy()
    raw = a.tobytes() if (~simple).any() else b""
    for k in np.flatnonzero(~simple).tolist():
        token = raw[starts[k] : ends[k] + 1]
        if _FLOAT_RE.fullmatch(token):
            vals[k] = float(token)
            ok[k] = True
        else:
            vals[k] = np.nan
    return vals, ok
