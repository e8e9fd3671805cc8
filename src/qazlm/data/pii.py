"""PII patterns and validators: e-mails and IPs (datatrove's PIIFormatter), phones, cards, KZ IIN/BIN.

A 12-digit number is replaced only when its Kazakhstan IIN/BIN checksum is valid, and a card number
only when it passes Luhn, so ordinary long numbers (ids, amounts) survive.
"""

from __future__ import annotations

import re

IIN_WEIGHTS_1 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
IIN_WEIGHTS_2 = (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2)

PHONE_RE = r"(?<![\w+])(?:\+7|8|\+\d{1,3})[\s\-(]*\d{3}[\s\-)]*\d{3}[\s\-]*\d{2}[\s\-]*\d{2}(?!\d)"
CARD_RE = r"(?<!\d)(?:\d[ \-]?){12,18}\d(?!\d)"
IIN_RE = r"(?<!\d)\d{12}(?!\d)"


def iin_checksum(digits: str) -> int | None:
    """Control digit of an IIN/BIN from its first 11 digits (official algorithm); None if undefined."""
    d = [int(c) for c in digits[:11]]
    c = sum(w * x for w, x in zip(IIN_WEIGHTS_1, d)) % 11
    if c == 10:
        c = sum(w * x for w, x in zip(IIN_WEIGHTS_2, d)) % 11
        if c == 10:
            return None
    return c


def is_valid_iin_bin(number: str) -> bool:
    """12 digits whose 12th digit is the checksum of the first 11.

    IIN: YYMMDD + century/sex digit 1-6; BIN: YYMM + entity type digit 4-6. Both share the checksum.
    """
    if not re.fullmatch(r"\d{12}", number):
        return False
    check = iin_checksum(number)
    if check is None or check != int(number[11]):
        return False
    month = int(number[2:4])
    is_iin = 1 <= month <= 12 and 1 <= int(number[4:6]) <= 31 and number[6] in "0123456"
    is_bin = 1 <= month <= 12 and number[4] in "456"
    return is_iin or is_bin


def luhn_valid(number: str) -> bool:
    digits = [int(c) for c in re.sub(r"\D", "", number)]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0
