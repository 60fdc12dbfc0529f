from zsdistill.model_card import ModelCardFacts, render_model_card


def make_facts(**overrides) -> ModelCardFacts:
    facts = {
        "teacher": "roberta-large-mnli",
        "student_base": "distilbert-base-uncased",
        "hypothesis_template": "This example is {}.",
        "multi_label": False,
        "temperature": 1.0,
        "class_names": ["a", "b"],
        "num_examples": 10,
        "num_validation": 0,
        "agreement": None,
        "command": "zsdistill ...",
    }
    return ModelCardFacts(**{**facts, **overrides})


def test_base_model_metadata_for_hub_ids(tmp_path):
    assert "base_model: distilbert-base-uncased" in render_model_card(make_facts())
    assert "base_model:" not in render_model_card(make_facts(student_base=str(tmp_path)))


def test_model_card_escapes_markdown():
    card = render_model_card(make_facts(hypothesis_template="It is `{}`.", class_names=["World | politics", "sports"]))
    assert "| 0 | World \\| politics |" in card
    assert "`` It is `{}`. ``" in card


def test_agreement_in_model_card():
    card = render_model_card(make_facts(agreement=0.725, num_validation=40))
    assert "72.50% on 40 held-out texts" in card
    assert "not measured" in render_model_card(make_facts())
