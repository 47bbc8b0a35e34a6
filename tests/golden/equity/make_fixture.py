"""Equity fixture from an independent evaluator (eval7), for tests/tests/poker_equity.rs.

Run with the golden environment (tests/golden/requirements.txt):
    /work/venv-golden/bin/python tests/golden/equity/make_fixture.py
It writes equity_cases.json beside this script. Exact cases enumerate every
board completion in Python and score each with eval7.evaluate; split pots
share equally. Range cases preflop use eval7's own Monte Carlo with many
samples and record its standard error.
"""

import itertools
import json
import math
import pathlib

import eval7

DECK = [eval7.Card(r + s) for r in "23456789TJQKA" for s in "cdhs"]


def cards(text):
    return [eval7.Card(text[i:i + 2]) for i in range(0, len(text), 2)]


def exact(hands, board, villain_range=None):
    """Exact equity of fixed hands (plus, optionally, one range seat)."""
    seats = [[cards(h)] for h in hands]
    if villain_range is not None:
        seats.append([list(combo) for combo, _ in eval7.HandRange(villain_range).hands])
    board_cards = cards(board)
    known = {str(c) for c in board_cards} | {str(c) for h in hands for c in cards(h)}
    seats = [
        [combo for combo in seat if len(seat) == 1 or not ({str(c) for c in combo} & known)]
        for seat in seats
    ]
    shares = [0.0] * len(seats)
    count = 0
    for assignment in itertools.product(*seats):
        used = {str(c) for combo in assignment for c in combo}
        if len(used) != 2 * len(assignment) or used & {str(c) for c in board_cards}:
            continue
        deck = [c for c in DECK if str(c) not in used | {str(b) for b in board_cards}]
        for rest in itertools.combinations(deck, 5 - len(board_cards)):
            full = board_cards + list(rest)
            values = [eval7.evaluate(list(combo) + full) for combo in assignment]
            best = max(values)
            winners = [i for i, v in enumerate(values) if v == best]
            for i in winners:
                shares[i] += 1.0 / len(winners)
            count += 1
    return {"equity": [s / count for s in shares], "samples": count}


def monte_carlo_vs_range(hand, villain_range, board, iters):
    eq = eval7.py_hand_vs_range_monte_carlo(cards(hand), eval7.HandRange(villain_range), cards(board), iters)
    # eval7 reports the hero's equity; the standard error of a mean of
    # shares in [0, 1] is at most sqrt(eq (1 - eq) / n).
    se = math.sqrt(eq * (1 - eq) / iters)
    return {"equity": [eq, 1 - eq], "samples": iters, "std_error": se}


EXACT = [
    (["AhKh", "QsQd"], ""),
    (["7c7d", "AsKd"], ""),
    (["AhKh", "QsQd", "Jc9c"], "2h7c8c"),
    (["As2s", "KdKc"], "Ts9s2d"),
    (["8h9h", "AcAd", "KsQs"], "Th7h2cJs"),
    (["AdTc", "KcKh"], "Td7h2cKs5d"),
    (["5c4c", "AhAs"], "3c2d9hKc"),
]
EXACT_RANGE = [
    ("AhKh", "QQ+, AKs", "2h7c8c"),
    ("9s9d", "ATo+, 76s, KQo", "Ad7c2h"),
    ("JsTs", "22-55, A2s-A5s", "9s8d2c4h"),
]
MONTE_CARLO = [
    ("AhKh", "QQ+, AKs"),
    ("2c7d", "QQ+, AKs, ATo+, 76s, KQo"),
    ("8s8h", "22+, A2s+, KTs+, ATo+"),
]


def main():
    cases = []
    for hands, board in EXACT:
        cases.append({"hands": hands, "board": board, "range": None, "method": "exact", **exact(hands, board)})
    for hand, rng, board in EXACT_RANGE:
        cases.append({"hands": [hand], "board": board, "range": rng, "method": "exact", **exact([hand], board, rng)})
    for hand, rng in MONTE_CARLO:
        cases.append({"hands": [hand], "board": "", "range": rng, "method": "monte-carlo",
                      **monte_carlo_vs_range(hand, rng, "", 2_000_000)})
    out = pathlib.Path(__file__).with_name("equity_cases.json")
    out.write_text(json.dumps({"source": "eval7 " + getattr(eval7, "__version__", ""), "cases": cases}, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
