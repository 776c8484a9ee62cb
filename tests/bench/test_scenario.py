from slimvl.bench.scenario import QUESTION, Scenario
from slimvl.models.tokenizer import build_tokenizer


def test_standard_question_is_about_30_tokens_with_the_builtin_tokenizer() -> None:
    # The shape models' tokenizer: the prompt length, not the sentence, sets the prefill's work.
    n_tokens = len(build_tokenizer([], vocab_size=512).encode(QUESTION))
    assert 25 <= n_tokens <= 40
    assert Scenario().question == QUESTION
