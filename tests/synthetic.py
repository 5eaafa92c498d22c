"""A small, learnable spam/ham file in the SMS Spam Collection's format."""
from __future__ import annotations

import random
from pathlib import Path

SPAM = ["WIN a FREE prize now, call 0800 {n}", "URGENT! You have won {n} cash, text CLAIM",
        "Free entry: reply WIN to {n} for your award", "Congratulations! Claim your {n} prize today"]
HAM = ["see you at home around {n}", "ok i will call you later", "are we still on for lunch at {n}",
       "thanks, talk to you tomorrow", "can you pick up milk on the way", "running {n} min late sorry"]


def write_sms_file(path: Path, n_ham: int = 180, n_spam: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = [("ham", rng.choice(HAM)) for _ in range(n_ham)] + \
           [("spam", rng.choice(SPAM)) for _ in range(n_spam)]
    rng.shuffle(rows)
    path.write_text("".join(f"{label}\t{text.format(n=rng.randint(1, 99))}\n"
                            for label, text in rows))
    return path
