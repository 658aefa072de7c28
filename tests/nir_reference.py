"""An independent, plain-Python implementation of the NIR rules (the oracle for kernels/_nir).

Written from the rules in ../shared/reference/README.md, not from the kernel.
"""

DIGITS = set("0123456789")


def reference_check(value):
    """(status, key_computed, completed 15-char NIR or None)."""
    if value is None:
        return "missing", False, None
    cleaned = "".join(ch for ch in value if ch not in " .-\t")
    cleaned = cleaned.replace("a", "A").replace("b", "B")
    if cleaned == "":
        return "missing", False, None
    if len(cleaned) not in (13, 15):
        return "bad_format", False, None
    body = cleaned[:13]
    dept = body[5:7]
    if not (set(body[:5]) <= DIGITS and set(body[7:]) <= DIGITS and (set(dept) <= DIGITS or dept in ("2A", "2B"))):
        return "bad_format", False, None
    if len(cleaned) == 15 and not set(cleaned[13:]) <= DIGITS:
        return "bad_format", False, None
    sex = int(body[0])
    month = int(body[3:5])
    if sex not in (1, 2, 3, 4, 7, 8):
        return "bad_format", False, None
    if not (1 <= month <= 12 or 20 <= month <= 42 or 50 <= month <= 99):
        return "bad_format", False, None
    if dept not in ("2A", "2B"):
        d = int(dept)
        if d == 97:
            if not 1 <= int(body[7]) <= 8:
                return "bad_format", False, None
        elif d == 98:
            if not 4 <= int(body[7]) <= 8:
                return "bad_format", False, None
        elif d == 99:
            if int(body[7:10]) < 100:
                return "bad_format", False, None
        elif not 1 <= d <= 95:
            return "bad_format", False, None
    if int(body[10:13]) == 0:
        return "bad_format", False, None
    numeric = body.replace("2A", "19") if dept == "2A" else body.replace("2B", "18") if dept == "2B" else body
    key = 97 - int(numeric) % 97
    completed = body + f"{key:02d}"
    kind = "valid" if sex in (1, 2) else "valid_temporary"
    if len(cleaned) == 13:
        return kind, True, completed
    if int(cleaned[13:]) != key:
        return "bad_key", False, None
    return kind, False, completed
