"""The `import` extractor: MuSe-style per-timestamp CSV files (the demo's biosignals, FAU-like tables)
into the feature table schema, and every way such a file can be wrong."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from pipeline.core.config import ConfigError
from pipeline.core.features import read_features, write_features
from pipeline.corpus.demo import biosignals_path_for, plan_corpus, write_biosignals
from pipeline.corpus.demo.params import CorpusParams
from pipeline.corpus.manifest import Clip
from pipeline.extract.base import ExtractionError
from pipeline.extract.csv_import import CsvImport, ImportParams

PARAMS = CorpusParams(speakers=4, clips_per_speaker=4, seconds=6.0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, list[Clip]]:
    """The demo corpus' biosignal CSVs (no media needed) under <root>/data/corpus/biosignals."""
    root = tmp_path_factory.mktemp("import")
    plans = plan_corpus(PARAMS)
    write_biosignals(plans, PARAMS, root / "data/corpus")
    clips = [Clip(clip_id=p.clip_id, speaker=p.speaker, media_path="unused.mp4", duration=6.0) for p in plans]
    return root, clips


def _clip(clip_id: str = "c", speaker: str = "s") -> Clip:
    return Clip(clip_id=clip_id, speaker=speaker, media_path="unused.mp4", duration=2.0)


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def test_demo_biosignals_import_as_the_csv_says(demo):
    root, clips = demo
    imp = CsvImport(ImportParams())
    assert (imp.dim, imp.rate_hz, imp.modality, imp.columns) == (3, 2.0, "physio", ["ECG", "RESP", "BPM"])
    lost = 0
    for clip in clips:
        rows = imp.process_clip(clip, root)
        table = pd.read_csv(biosignals_path_for(root / "data/corpus", clip.clip_id))
        np.testing.assert_array_equal(rows.t, table.timestamp.to_numpy() / 1000)
        np.testing.assert_allclose(rows.t, np.arange(13) * 0.5)  # 6 s at 2 Hz, both ends
        expected = table[["ECG", "RESP", "BPM"]].to_numpy(np.float32)
        empty = np.isnan(expected).any(axis=1)
        assert rows.present.tolist() == (~empty).tolist()
        np.testing.assert_array_equal(rows.values[~empty], expected[~empty])
        assert not rows.values[empty].any()
        lost += empty.any()
    assert 0 < lost < len(clips)  # some clips lost sensor contact for a while
    meta = imp.meta()
    assert (meta.name, meta.dim, meta.rate_hz, meta.modality, meta.learned) == ("import", 3, 2.0, "physio", False)
    assert "ECG, RESP, BPM" in meta.backbone and "present=False" in meta.notes
    assert meta.weights_statement.endswith("fixed feature set (no learned weights)")


def test_all_columns_and_inferred_rate_come_from_the_first_file(demo, tmp_path):
    root, clips = demo
    imp = CsvImport(ImportParams(columns="all", rate_hz=None), root=root)
    assert imp.columns == ["ECG", "RESP", "BPM", "EDA"]  # not timestamp, not segment_id
    assert imp.rate_hz == 2.0 and imp.reference.name == sorted(c.clip_id for c in clips)[0] + ".csv"
    rows = imp.process_clip(clips[0], root)
    assert rows.values.shape == (13, 4)
    assert imp.params()["feature_columns"] == imp.columns
    # the table round-trips through the store
    write_features(tmp_path / "import.parquet", imp.meta(), {c.clip_id: imp.process_clip(c, root) for c in clips[:3]})
    meta, back = read_features(tmp_path / "import.parquet")
    assert meta.rate_hz == 2.0 and meta.dim == 4 and sorted(back) == sorted(c.clip_id for c in clips[:3])
    with pytest.raises(ExtractionError, match=r"nowhere: no file matches '\{clip_id\}\.csv'"):
        CsvImport(ImportParams(dir=str(tmp_path / "nowhere"), columns="all"))


def test_fau_like_table_in_seconds_with_speaker_pattern(tmp_path):
    text = "timestamp,segment_id,AU01_r,AU02_r,confidence_label\n0.0,3,0.5,1.5,x\n0.2,3,,2.0,y\n0.6,3,0.7,2.5,z\n"
    _write(tmp_path / "faus", "s07.csv", text)
    params = ImportParams(dir=str(tmp_path / "faus"), pattern="{speaker}.csv", time_unit="s", columns="all",
                          rate_hz=5.0, modality="face")
    imp = CsvImport(params)
    assert imp.columns == ["AU01_r", "AU02_r"]  # the text column is not a feature
    rows = imp.process_clip(_clip(speaker="s07"), Path("."))
    np.testing.assert_allclose(rows.t, [0.0, 0.2, 0.6])  # 0.4 is missing: a gap of whole periods is fine
    assert rows.present.tolist() == [True, False, True]
    np.testing.assert_array_equal(rows.values, np.float32([[0.5, 1.5], [0, 0], [0.7, 2.5]]))
    assert imp.meta().modality == "face"


def test_missing_file_names_the_file(demo):
    root, _ = demo
    with pytest.raises(ExtractionError, match=r"biosignals/ghost\.csv: not found \(import\.dir"):
        CsvImport(ImportParams()).process_clip(_clip("ghost"), root)


@pytest.mark.parametrize(
    "text, message",
    [
        ("timestamp,ECG,RESP\n0,1,2\n500,1,2\n", r"bad\.csv: no column 'BPM' \(import\.columns\); it has timestamp, ECG, RESP"),
        ("time,ECG,RESP,BPM\n0,1,2,3\n", r"bad\.csv: no time column 'timestamp'"),
        ("timestamp,ECG,RESP,BPM\n0,1,2,3\n500,1,n/a?,3\n", r"bad\.csv: column 'RESP' is not numeric \(line 3: 'n/a\?'\)"),
        ("timestamp,ECG,RESP,BPM\n0,1,2,3\n1000,1,2,3\n500,1,2,3\n", r"bad\.csv: column 'timestamp' has unsorted timestamps at line 4 \(1000 then 500\)"),
        ("timestamp,ECG,RESP,BPM\n0,1,2,3\n500,1,2,3\n500,1,2,3\n", r"bad\.csv: column 'timestamp' has duplicate timestamps at line 4"),
        ("timestamp,ECG,RESP,BPM\n0,1,2,3\n,1,2,3\n", r"bad\.csv: column 'timestamp' is empty at line 3"),
        ("timestamp,ECG,RESP,BPM\n0,1,2,3\n500,1,2,3\n800,1,2,3\n", r"bad\.csv: column 'timestamp' steps 300 ms at line 4, not a multiple of the 500 ms period of 2 Hz"),
        ("", r"bad\.csv: unreadable CSV file"),
    ],
)
def test_bad_files_are_errors_naming_file_and_column(tmp_path, text, message):
    _write(tmp_path, "bad.csv", text)
    imp = CsvImport(ImportParams(dir=str(tmp_path)))
    with pytest.raises(ExtractionError, match=message):
        imp.process_clip(_clip("bad"), Path("."))


def test_input_fingerprint_follows_file_content_and_clip(tmp_path):
    path = _write(tmp_path, "c.csv", "timestamp,ECG,RESP,BPM\n0,1,2,3\n")
    imp = CsvImport(ImportParams(dir=str(tmp_path)))
    first = imp.input_fingerprint(_clip("c"), Path("."))
    assert imp.input_fingerprint(_clip("c"), Path(".")) == first
    path.write_text("timestamp,ECG,RESP,BPM\n0,1,2,4\n")
    changed = imp.input_fingerprint(_clip("c"), Path("."))
    assert changed != first
    assert imp.input_fingerprint(_clip("d"), Path(".")) not in (first, changed)  # absent file: still per clip
    other = CsvImport(ImportParams(dir=str(tmp_path), columns=["ECG"]))
    assert other.config_fingerprint() != imp.config_fingerprint()


def test_invalid_settings_are_config_errors():
    with pytest.raises(ValidationError, match="clip_id"):
        ImportParams(pattern="features.csv")
    with pytest.raises(ValidationError, match="clip_id"):
        ImportParams(pattern="{clip}.csv")
    with pytest.raises(ValidationError, match="at least one column"):
        ImportParams(columns=[])
    with pytest.raises(ValidationError, match="each once"):
        ImportParams(columns=["ECG", "ECG"])
    with pytest.raises(ValidationError):
        ImportParams(time_unit="min")
    with pytest.raises(ConfigError, match="lists the time column"):
        CsvImport(ImportParams(columns=["timestamp", "ECG"]))


# ---- several folders: import.sources (000 §5.2: FAUs, eGeMAPS and biosignals, each its own folder) ----------


def test_sources_inherit_the_sections_settings_and_name_their_tables():
    section = ImportParams(dir="bio", sources_root="/muse/feature_segments", columns=["ECG"],
                           sources={"faus": {"columns": "all", "modality": "face"}, "egemaps": {"dir": "egemaps_2hz"}})
    faus = section.source("faus")
    assert (faus.dir, faus.columns, faus.modality, faus.rate_hz, faus.pattern) == (
        "/muse/feature_segments/faus", "all", "face", 2.0, "{clip_id}.csv")  # the name is the default folder
    assert section.source("egemaps").dir == "/muse/feature_segments/egemaps_2hz"
    assert section.source("egemaps").columns == ["ECG"]  # not given: the section's
    assert list(section.features()) == ["import", "import/faus", "import/egemaps"]
    assert section.features()["import"] is section


@pytest.mark.parametrize("sources, where", [
    ({"Faus": {}}, "sources.Faus"),
    ({"faus": {"dir": "/elsewhere"}}, "sources.faus.dir"),
    ({"faus": {"dir": "../up"}}, "sources.faus.dir"),
    ({"faus": {"time_unit": "min"}}, "sources.faus.time_unit"),
    ({"faus": {"colums": "all"}}, "sources.faus.colums"),
    ({"faus": {"sources": {}}}, "sources.faus"),
    ({"faus": "all"}, "sources.faus"),
])
def test_a_bad_source_is_one_line_naming_its_key(tmp_path, sources, where):
    from pipeline.core.config import load_section

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"import": {"sources": sources}}))
    with pytest.raises(ConfigError) as e:
        load_section("import", tmp_path / "params.yaml")
    assert f"  import.{where}: " in str(e.value), str(e.value)


def test_the_import_stage_writes_a_table_per_source(demo, tmp_path, monkeypatch):
    """Real files through the stage: the section's folder as `import`, each source as `import/<name>`
    (data/features/import/<name>.parquet), values as the CSVs say; a folder without files gives an empty
    table, said."""
    from pipeline.corpus.manifest import CorpusInfo, write_manifest
    from pipeline.extract.stage import import_stage

    root, clips = demo
    monkeypatch.chdir(tmp_path)
    write_manifest(tmp_path / "data/corpus/manifest.parquet", CorpusInfo("demo", []), clips)
    shutil.copytree(root / "data/corpus/biosignals", tmp_path / "muse/biosignals")
    for clip in clips:  # a FAU-like folder at 2 Hz, one column per action unit
        t = np.arange(13) * 500
        frame = pd.DataFrame({"timestamp": t, "segment_id": 1, "AU01_r": t / 1000, "AU12_r": 1 - t / 1000})
        _write(tmp_path / "muse/faus", f"{clip.clip_id}.csv", frame.to_csv(index=False))
    (tmp_path / "muse/empty").mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"import": {
        "dir": "muse/biosignals", "sources_root": "muse",
        "sources": {"faus": {"columns": "all", "modality": "face"}, "ecg": {"dir": "biosignals", "columns": ["ECG"]},
                    "nothing": {"dir": "empty"}}}}))
    import_stage()
    main, faus, ecg = (read_features(tmp_path / f"data/features/{f}.parquet") for f in ("import", "import/faus", "import/ecg"))
    assert (main[0].name, main[0].dim, faus[0].name, faus[0].dim, faus[0].modality) == ("import", 3, "import/faus", 2, "face")
    assert sorted(faus[1]) == sorted(c.clip_id for c in clips)
    np.testing.assert_allclose(faus[1][clips[0].clip_id].values[:, 0], np.arange(13) * 0.5)
    np.testing.assert_array_equal(ecg[1][clips[0].clip_id].values[:, 0], main[1][clips[0].clip_id].values[:, 0])
    assert "sources" not in main[0].params and "sources_root" not in main[0].params  # a table keeps its bytes
    nothing_meta, nothing = read_features(tmp_path / "data/features/import/nothing.parquet")
    assert nothing == {} and nothing_meta.name == "import/nothing"
    assert (tmp_path / "data/errors/import/faus.csv").is_file()
