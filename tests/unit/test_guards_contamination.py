"""Contamination guard: benchmark datasets by alias, re-uploads by row hashes, environments, games, descriptions."""

from __future__ import annotations

import json

import pytest

from engine.errors import ArtifactError
from engine.synth.guards.contamination import (
    BENCHMARK_ALIASES,
    BENCHMARK_DESCRIPTIONS,
    ContaminationIndex,
    check_contamination,
    contamination_index_from_hub,
    description_similarity,
    match_dataset,
    match_payoffs,
    row_fingerprints,
)
from engine.synth.records import DatasetProposal, ProposalRecord

OVERLAP = 0.6
MLGYM_TASKS = {
    "regressionKaggleHousePrice", "3SATTime", "imageClassificationCifar10", "imageClassificationFMnist",
    "imageCaptioningCOCO", "languageModelingFineWeb", "naturalLanguageInferenceMNLI", "battleOfSexes",
    "prisonersDilemma", "blotto", "rlBreakoutMinAtar", "rlMetaMazeMisc", "rlMountainCarContinuous",
}
# Titanic-like rows, made up for the test (synthscale ships no real benchmark rows).
BENCH_ROWS = [
    {"PassengerId": 1, "Survived": 0, "Pclass": 3, "Name": "Doe, Mr. John Albert", "Sex": "male", "Age": 22.0},
    {"PassengerId": 2, "Survived": 1, "Pclass": 1, "Name": "Roe, Mrs. Jane (Ann Smith)", "Sex": "female", "Age": 38.0},
    {"PassengerId": 3, "Survived": 1, "Pclass": 3, "Name": "Poe, Miss. Edna", "Sex": "female", "Age": 26.0},
    {"PassengerId": 4, "Survived": 0, "Pclass": 2, "Name": "Moe, Mr. Walter Frank", "Sex": "male", "Age": None},
]


def proposal(description: str = "Predict the yield of a crop from soil measurements and rainfall.", *,
             hf_id: str | None = "farmlab/crop-yield", config: str | None = None, name: str = "Crop yield",
             task_type: str = "regression") -> ProposalRecord:
    ds = None if hf_id is None else DatasetProposal(hf_id=hf_id, config=config, input_columns=["x"], target_column="y")
    return ProposalRecord(proposal_id="p1", topic_id="t1", topic="agronomy", domain="tabular", name=name,
                          description=description, task_type=task_type, metric="rmse", direction="min",
                          needs_dataset=ds is not None, dataset=ds)


def test_every_benchmark_task_has_our_description_and_an_entry():
    assert set(BENCHMARK_DESCRIPTIONS) == MLGYM_TASKS
    covered = {t for e in BENCHMARK_ALIASES.values() for t in e.tasks}
    assert covered == MLGYM_TASKS - {"3SATTime"}  # 3-SAT instances are generated, not a dataset
    assert set(BENCHMARK_ALIASES) == {
        "cifar10", "fashion_mnist", "mnli", "mscoco", "fineweb", "house_prices", "titanic", "minatar_breakout",
        "metamaze", "mountain_car_continuous", "prisoners_dilemma", "battle_of_sexes", "blotto"}


@pytest.mark.parametrize("hf_id, config, expected", [
    ("cifar10", None, "cifar10"),
    ("uoft-cs/cifar10", None, "cifar10"),
    ("someone/CIFAR-10", None, "cifar10"),
    ("someone/CIFAR10", None, "cifar10"),
    ("someone/cifar_10_lt", None, "cifar10"),
    ("zalando-datasets/fashion_mnist", None, "fashion_mnist"),
    ("me/FashionMNIST-augmented", None, "fashion_mnist"),
    ("nyu-mll/multi_nli", None, "mnli"),
    ("nyu-mll/glue", "mnli", "mnli"),
    ("glue", "mnli_matched", "mnli"),
    ("HuggingFaceFW/fineweb", "sample-10BT", "fineweb"),
    ("HuggingFaceFW/fineweb-edu", None, "fineweb"),
    ("someone/ames-housing", None, "house_prices"),
    ("someone/house-prices-advanced-regression-techniques", None, "house_prices"),
    ("someone/house_prices", None, "house_prices"),
    ("someone/titanic", None, "titanic"),
    ("phiyodr/coco2017", None, "mscoco"),
])
def test_benchmark_datasets_match_by_id_alias_and_config(hf_id, config, expected):
    hit = match_dataset(hf_id, config)
    assert hit is not None and hit[0] == expected


@pytest.mark.parametrize("hf_id, config", [
    ("uoft-cs/cifar100", None), ("ylecun/mnist", None), ("nyu-mll/glue", "sst2"), ("scikit-learn/iris", None),
    ("someone/california_housing", None), ("someone/house_prices_india", None), ("stanfordnlp/snli", None),
])
def test_other_datasets_do_not_match(hf_id, config):
    assert match_dataset(hf_id, config) is None


@pytest.mark.parametrize("hf_id", ["cifar10", "uoft-cs/cifar10", "tanganke/CIFAR-10", "me/cifar_10"])
def test_cifar10_proposals_are_rejected_as_contaminated(hf_id):
    reject = check_contamination(proposal(hf_id=hf_id), None, None, description_overlap_max=OVERLAP)
    assert reject is not None
    assert (reject.stage, reject.item_id, reject.reason) == ("guard", "p1", "contaminated_dataset")
    assert "cifar10" in reject.detail


def test_a_proposal_naming_a_benchmark_dataset_in_its_text_is_rejected():
    p = proposal("Classify the Fashion-MNIST clothing pictures with a small convolutional network.",
                 hf_id="me/clothes-28px")
    reject = check_contamination(p, None, None, description_overlap_max=OVERLAP)
    assert reject is not None and reject.reason == "contaminated_dataset"
    assert reject.detail == "the proposal names benchmark dataset fashion_mnist ('fashionmnist')"


def test_a_clean_proposal_passes():
    assert check_contamination(proposal(), None, None, description_overlap_max=OVERLAP) is None


def test_row_fingerprints_ignore_column_names_order_and_number_format():
    renamed = {"survived_flag": "0", "full_name": "doe,  mr. JOHN albert", "class": "3.0", "pid": "1",
               "gender": "MALE", "age_years": "22"}
    assert row_fingerprints(BENCH_ROWS[0]) == row_fingerprints(renamed)
    assert row_fingerprints({"label": 1}) == set()  # too short to tell datasets apart


def test_a_renamed_reupload_is_rejected_by_row_hashes():
    index = ContaminationIndex()
    assert index.build_from_rows("titanic", BENCH_ROWS) > 0
    # A different id, different column names and order, one extra column; the values are the benchmark's.
    reupload = [{"passenger": r["Name"], "ticket_class": r["Pclass"], "lived": r["Survived"], "row": i,
                 "sex": r["Sex"], "years": r["Age"], "pid": r["PassengerId"]} for i, r in enumerate(BENCH_ROWS)]
    p = proposal("Predict which passengers of an old voyage survived from their class, sex and age.",
                 hf_id="shipping/voyage-passengers")
    reject = check_contamination(p, reupload, index, description_overlap_max=OVERLAP)
    assert reject is not None and reject.reason == "contaminated_rows"
    assert reject.detail == "4 of 4 sampled rows are rows of benchmark dataset titanic"


def test_a_text_reupload_that_keeps_some_columns_matches_by_its_long_cells():
    # MNLI-like rows, made up for the test.
    nli = [{"promptID": 500 + i, "pairID": f"{500 + i}n",
            "premise": f"The committee met twice before the budget vote, and both meetings ran late (item {i}).",
            "hypothesis": "The committee met before the vote.", "genre": "government", "label": i % 3}
           for i in range(3)]
    index = ContaminationIndex()
    index.build_from_rows("mnli", nli)
    reupload = [{"text_a": r["premise"].upper(), "label_name": ["entailment", "neutral", "contradiction"][r["label"]]}
                for r in nli]
    reject = check_contamination(proposal("Decide whether sentence pairs agree.", hf_id="me/pairs"), reupload, index,
                                 description_overlap_max=OVERLAP)
    assert reject is not None and reject.detail == "3 of 3 sampled rows are rows of benchmark dataset mnli"


def test_one_matching_row_of_many_is_not_enough_but_half_is():
    index = ContaminationIndex()
    index.build_from_rows("titanic", BENCH_ROWS)
    other = [{"name": f"Someone Else Number {i}", "age": i} for i in range(5)]
    p = proposal(hf_id="shipping/voyage-passengers")
    assert check_contamination(p, [BENCH_ROWS[0]] + other, index, description_overlap_max=OVERLAP) is None
    reject = check_contamination(p, [BENCH_ROWS[0]], index, description_overlap_max=OVERLAP)
    assert reject is not None and reject.detail == "1 of 1 sampled rows are rows of benchmark dataset titanic"


def test_the_index_round_trips_through_json(tmp_path):
    index = ContaminationIndex(min_chars=12)
    index.build_from_rows("titanic", BENCH_ROWS)
    path = tmp_path / "sub" / "index.json"
    index.save(path)
    loaded = ContaminationIndex.load(path)
    assert loaded.hashes == index.hashes and loaded.min_chars == 12 and len(loaded) == len(index)
    assert json.loads(path.read_text())["version"] == 1
    path.write_text(json.dumps({"version": 0, "datasets": {}}))
    with pytest.raises(ArtifactError, match="version 0, expected 1"):
        ContaminationIndex.load(path)
    with pytest.raises(ArtifactError, match="not found; build it"):
        ContaminationIndex.load(tmp_path / "missing.json")


def test_index_from_a_row_fetcher():
    calls = []

    def fetch(hf_id, config, split, n_rows):
        calls.append((hf_id, config, split, n_rows))
        return BENCH_ROWS

    index = contamination_index_from_hub(fetch, {"titanic": ("someone/titanic", None, "train")}, 2)
    assert calls == [("someone/titanic", None, "train", 2)]
    assert index.names == ["titanic"]
    assert index.hashes["titanic"] == row_fingerprints(BENCH_ROWS[0]) | row_fingerprints(BENCH_ROWS[1])


@pytest.mark.parametrize("name, description", [
    ("Continuous mountain car", "Train a policy for MountainCarContinuous-v0 with PPO and maximise the return."),
    ("Car on a hill", "Solve the Mountain Car Continuous environment from gymnasium."),
    ("Mini breakout", "Train a DQN agent on MinAtar Breakout."),
    ("Maze memory", "An agent in the MetaMaze-misc environment must remember where the goal was."),
])
def test_benchmark_control_environments_are_rejected(name, description):
    p = proposal(description, hf_id=None, name=name, task_type="control")
    reject = check_contamination(p, None, None, description_overlap_max=OVERLAP)
    assert reject is not None and reject.reason == "contaminated_environment"


@pytest.mark.parametrize("description", [
    "Train a policy for CartPole-v1 with a small actor-critic and maximise the mean return.",
    "Drive the discrete MountainCar-v0 car up the hill in as few steps as possible.",
    "Train an agent on MinAtar Freeway.",
])
def test_other_control_environments_pass(description):
    p = proposal(description, hf_id=None, name="Control task", task_type="control")
    assert check_contamination(p, None, None, description_overlap_max=OVERLAP) is None


PD = "Write a strategy for an iterated prisoner's dilemma against a pool of noisy opponents."


@pytest.mark.parametrize("payoffs", [
    [[3, 0], [5, 1]],  # cooperate = 0
    [[1, 5], [0, 3]],  # defect = 0
    [[(3, 3), (0, 5)], [(5, 0), (1, 1)]],  # (mine, theirs) pairs
    {("C", "C"): 3, ("C", "D"): 0, ("D", "C"): 5, ("D", "D"): 1},
])
def test_a_game_with_mlgyms_payoffs_is_rejected(payoffs):
    p = proposal(PD, hf_id=None, name="Iterated PD", task_type="game")
    reject = check_contamination(p, None, None, description_overlap_max=OVERLAP, payoffs=payoffs)
    assert reject is not None and reject.reason == "contaminated_environment"
    assert reject.detail == "the game has MLGym's payoffs for prisoners_dilemma"


def test_battle_of_sexes_and_blotto_payoffs_are_recognised_and_other_payoffs_pass():
    assert match_payoffs([[2, 0], [0, 1]]) == "battle_of_sexes"
    assert match_payoffs([[1, 0], [0, 2]]) == "battle_of_sexes"  # the other seat
    assert match_payoffs({"soldiers": 120, "battlefields": 6}) == "blotto"
    assert match_payoffs({"soldiers": 100, "battlefields": 5}) is None
    assert match_payoffs([[4, 0], [6, 2]]) is None
    p = proposal(PD, hf_id=None, name="Iterated PD", task_type="game")
    assert check_contamination(p, None, None, description_overlap_max=OVERLAP, payoffs=[[4, 0], [6, 2]]) is None
    assert check_contamination(p, None, None, description_overlap_max=OVERLAP) is None  # nothing to compare


def test_a_near_identical_benchmark_description_is_rejected_and_an_unrelated_one_passes():
    original = BENCHMARK_DESCRIPTIONS["rlBreakoutMinAtar"]
    edited = (original.replace("MinAtar version of Breakout", "miniature version of a brick game")
              .replace("highest", "best").replace("Tune", "Improve"))
    task, score = description_similarity(edited)
    assert task == "rlBreakoutMinAtar" and score > OVERLAP
    reject = check_contamination(proposal(edited, hf_id=None, task_type="control"), None, None,
                                 description_overlap_max=OVERLAP)
    assert reject is not None and reject.reason == "contaminated_description"
    assert reject.detail == f"description {score:.2f} similar to MLGym task rlBreakoutMinAtar"
    unrelated = ("Forecast next week's electricity demand of a city from hourly load and temperature readings; "
                 "the score is the mean absolute error, lower is better.")
    assert description_similarity(unrelated)[1] < 0.1
    assert check_contamination(proposal(unrelated), None, None, description_overlap_max=OVERLAP) is None
