"""The Vision page's caption for the divergence probe's answer, from `divergence_answers`."""

import pandas as pd

from dashboard.frames.vision import answer_caption

ANSWERS = pd.DataFrame(
    {"prompt": ["a", "b"], "answer": ["generated", "teacher_forced"], "text": ["red", "is blue"]}
)


def test_the_caption_says_how_the_answer_was_had_and_its_text():
    assert answer_caption(ANSWERS, "a") == "Answer generated (greedy, with the image): 'red'"
    assert answer_caption(ANSWERS, "b").startswith("Answer teacher-forced")


def test_no_caption_without_a_row():
    assert answer_caption(ANSWERS, "c") is None
    assert answer_caption(None, "a") is None
    assert answer_caption(ANSWERS.iloc[:0], "a") is None
