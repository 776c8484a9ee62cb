from slimvl.data import make_example
from slimvl.data.grounding import referenced_objects
from slimvl.data.questions import NUMBER_WORDS


def test_referenced_objects_are_what_the_answer_is_read_from() -> None:
    for seed in range(600):
        example = make_example(seed)
        objects = [example.objects[i] for i in referenced_objects(example)]
        if example.qtype == "color":
            assert [obj.color for obj in objects] == [example.answer]
        elif example.qtype == "shape":
            assert [obj.shape for obj in objects] == [example.answer]
        elif example.qtype == "count":
            assert NUMBER_WORDS[len(objects)] == example.answer
        elif example.qtype == "exists":
            assert len(objects) == (example.answer == "yes")
        elif example.qtype == "position":
            assert len(objects) == 1 and objects[0].label in example.question
        else:
            anchor, target = objects
            assert anchor.label in example.question and target.shape == example.answer
