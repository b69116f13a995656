"""Near-duplicate removal: exact signatures, MinHash over description and starter code, first added wins."""

from __future__ import annotations

import pytest

from engine.errors import EngineError
from engine.synth.guards.dedup import Deduplicator, task_signature
from engine.synth.records import DatasetProposal, ProposalRecord

DESCRIPTION = (
    "Predict the daily number of bicycle rentals in a city from the weather, the season and the day of the week. "
    "Train a regression model on data/train.csv and write predictions for the validation and test rows to "
    "submission.csv; the score is the root mean squared error of the predicted counts, and lower is better. "
    "The baseline fits a linear model on the raw columns; feature engineering on the calendar columns helps."
)
CODE = "# baseline.py\n" + ((
    "import pandas as pd\nfrom sklearn.linear_model import LinearRegression\n"
    "train = pd.read_csv('data/train.csv')\nX = train.drop(columns=['count'])\ny = train['count']\n"
    "model = LinearRegression().fit(X, y)\nval = pd.read_csv('data/validation.csv')\n"
    "test = pd.read_csv('data/test.csv')\nrows = pd.concat([val, test])\n"
    "pred = model.predict(rows.drop(columns=['id']))\n"
    "pd.DataFrame({'id': rows['id'], 'count': pred}).to_csv('submission.csv', index=False)\n"
))


def proposal(pid: str, description: str = DESCRIPTION, *, hf_id: str = "city/bike-rentals", target: str = "count",
             metric: str = "rmse", name: str = "Bike rentals") -> ProposalRecord:
    return ProposalRecord(
        proposal_id=pid, topic_id="t", topic="mobility", domain="tabular", name=name, description=description,
        task_type="regression", metric=metric, direction="min",
        dataset=DatasetProposal(hf_id=hf_id, input_columns=["temp"], target_column=target),
    )


def test_signature_normalises_case_and_metric_spelling():
    a = task_signature(proposal("a", hf_id="City/Bike-Rentals", target="Count", metric="RMSE"))
    b = task_signature(proposal("b", "something else entirely"))
    assert a == b == ("city/bike-rentals", "", "count", "rmse", "regression")
    assert task_signature(proposal("c", target="casual")) != a


def test_an_equal_signature_is_a_duplicate_even_with_another_description():
    d = Deduplicator(threshold=0.8)
    assert d.add("a", proposal("a"), CODE) is None
    assert d.find(proposal("b", "Forecast rentals with gradient boosting."), "x = 1").model_dump() == {
        "kept_id": "a", "reason": "duplicate_signature", "similarity": 1.0}
    assert d.add("b", proposal("b", "Forecast rentals with gradient boosting."), "x = 1") == "a"
    assert len(d) == 1


def test_a_lightly_edited_description_on_another_dataset_id_is_a_near_duplicate():
    d = Deduplicator(threshold=0.8, seed=3)
    assert d.add("a", proposal("a"), CODE) is None
    edited = DESCRIPTION.replace("bicycle rentals", "bike hires").replace("helps", "may help")
    dup = d.find(proposal("b", edited, hf_id="mirror/bike-sharing"), CODE)
    assert dup is not None and (dup.kept_id, dup.reason) == ("a", "near_duplicate")
    assert 0.8 <= dup.similarity <= 1.0


def test_distinct_tasks_are_all_kept_and_the_first_of_a_cluster_wins():
    other = ("Classify the species of iris flowers from four petal and sepal measurements; accuracy on the held-out "
             "flowers is the score. The baseline is a shallow decision tree.")
    items = [
        ("bikes", proposal("bikes"), CODE),
        ("iris", proposal("iris", other, hf_id="sk/iris", target="species", metric="accuracy", name="Iris"),
         "from sklearn.tree import DecisionTreeClassifier\n"),
        ("bikes-again", proposal("bikes-again", DESCRIPTION + " Good luck.", hf_id="mirror/bikes"), CODE),
        ("bikes-same-signature", proposal("bikes-same-signature", "Rentals."), ""),
    ]

    def run():
        d = Deduplicator(threshold=0.8, seed=0)
        return [d.check(*item) for item in items]

    outcome = run()
    assert [i[0] for i, r in zip(items, outcome) if r is None] == ["bikes", "iris"]
    rejects = [r for r in outcome if r is not None]
    assert [(r.stage, r.item_id, r.reason) for r in rejects] == [
        ("dedup", "bikes-again", "near_duplicate"), ("dedup", "bikes-same-signature", "duplicate_signature")]
    assert rejects[1].detail == "bikes-same-signature duplicates bikes (similarity 1.00)"
    assert run() == outcome  # deterministic: the same input gives the same outcome


def test_dataset_free_tasks_share_a_signature_only_by_name():
    def game(pid: str, name: str, description: str) -> ProposalRecord:
        return ProposalRecord(proposal_id=pid, topic_id="t", topic="games", domain="game-theory", name=name,
                              description=description, task_type="game", metric="score", direction="max",
                              needs_dataset=False)

    d = Deduplicator(threshold=0.8)
    stag = game("stag", "Stag hunt", "Play an iterated stag hunt against a pool of opponents.")
    assert d.add("stag", stag, "a") is None
    assert d.add("chicken", game("chicken", "Chicken", "Play repeated chicken against reckless drivers."), "b") is None
    assert d.add("stag2", game("stag2", "Stag-Hunt", "Hunt stags, iterated, many opponents."), "c") == "stag"


def test_misuse_is_reported():
    with pytest.raises(EngineError, match="threshold 1.5"):
        Deduplicator(threshold=1.5)
    d = Deduplicator(threshold=0.8)
    d.add("a", proposal("a"), CODE)
    with pytest.raises(EngineError, match="'a' was already added"):
        d.add("a", proposal("z", "different", hf_id="x/y"), "")
