"""The seed's rule for an unanswerable question: refer the viewer to customer service. These regexes
(case-insensitive) mark a reply that does; `eval.referral_patterns` defaults to them."""

REFERRAL_PATTERNS = [
    r"customer (service|support|care)",
    r"(contact|ask|message|check with) (the |our )?(seller|shop|store|support|service)",
    r"客服",
    r"售后",
]
