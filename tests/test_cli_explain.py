"""``convviz-check explain`` end to end: photos of any size and channel count, value
ranges, the page, the summary, the filter count, several CAM methods side by side
(``--cam``), error messages, warnings.

The models are built here (a few convolutions, NumPy-seeded weights) and saved to
``.keras`` files; the photos are scikit-image's bundled samples saved with Pillow.
Runs in-process through ``convviz_check.cli.main`` (a subprocess only for the bundled
model and the model-source error).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convviz_check.cli import main
from convviz_check.examples import model_path
from convviz_check.render import filter_grid, overlay
from tests._models import seeded_weights

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "convviz_check"
SUMMARY_KEYS = {
    "model",
    "input",
    "images",
    "score_kind",
    "activations",
    "gradcam",
    "filters",
    "notes",
    "timings",
    "versions",
    "files",
}


# --------------------------------------------------------------------------- fixtures
def _convnet(shape: tuple[int, int, int], classes: int, path: Path, seed: int = 0) -> Path:
    import keras
    from keras import layers

    x_in = keras.Input(shape)
    x = layers.Conv2D(6, 3, activation="relu", name="conv_a")(x_in)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(7, 3, activation="relu", padding="same", name="conv_b")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(classes, activation="softmax", name="head")(x)
    model = keras.Model(x_in, out, name="tiny")
    seeded_weights(model, seed)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Photos (RGB PNG, grayscale JPEG, grayscale PNG, RGB JPEG) and three models."""
    import skimage.data

    d = tmp_path_factory.mktemp("explain_inputs")
    paths = {
        "chelsea_png": d / "chelsea.png",  # 300x451 RGB
        "camera_jpg": d / "camera.jpg",  # 512x512 gray
        "camera_png": d / "camera_gray.png",  # 512x512 gray
        "astronaut_jpg": d / "astronaut.jpg",  # 512x512 RGB
    }
    Image.fromarray(skimage.data.chelsea()).save(paths["chelsea_png"])
    Image.fromarray(skimage.data.camera()).save(paths["camera_jpg"], quality=95)
    Image.fromarray(skimage.data.camera()).save(paths["camera_png"])
    Image.fromarray(skimage.data.astronaut()).save(paths["astronaut_jpg"], quality=95)
    paths["gray_model"] = _convnet((32, 32, 1), 4, d / "gray.keras")  # expects [-1, 1]
    paths["rgb_model"] = _convnet((40, 48, 3), 3, d / "rgb.keras", seed=1)  # H != W
    paths["small_model"] = _convnet((10, 10, 1), 2, d / "small.keras")  # conv_b: 4x4
    paths["text_png"] = d / "notes.png"
    paths["text_png"].write_text("this is not an image\n")
    return paths


def _explain(*args: object) -> int:
    return main(["explain", *[str(a) for a in args]])


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def _srcs(index: Path) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]+)"', index.read_text(encoding="utf-8"))


def _check_page(out: Path) -> dict:
    """Every image the page shows exists, every PNG written is shown, and summary.json
    lists exactly those files."""
    srcs = _srcs(out / "index.html")
    assert srcs, "the page shows no image"
    for src in srcs:
        assert not src.startswith(("/", "file:", "http")), f"not a relative link: {src}"
        assert (out / src).is_file(), f"index.html shows a missing file: {src}"
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert set(srcs) == written
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    assert set(summary["files"]) == written
    return summary


# --------------------------------------------------------------------------- end to end
@pytest.mark.filterwarnings("default::convviz_check.errors.ConvvizWarning")
def test_a_float_array_off_the_models_range_is_warned_about_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras
    from keras import layers

    x_in = keras.Input((16, 16, 3))
    x = layers.Rescaling(1 / 255.0)(x_in)  # the model takes [0, 255]
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, activation="relu", name="c")(x))
    model = keras.Model(x_in, layers.Dense(3, activation="softmax")(x))
    seeded_weights(model, 0)
    path = tmp_path / "scaled.keras"
    model.save(path)
    image = np.random.default_rng(0).uniform(0, 1, (16, 16, 3)).astype(np.float32)
    np.save(tmp_path / "unit.npy", image)  # [0, 1]: near black to this model
    np.save(tmp_path / "pixels.npy", image * 255)
    args = ["--out", tmp_path / "out", "--what", "activations"]
    assert _explain(path, tmp_path / "unit.npy", *args) == 0
    err = capsys.readouterr().err
    assert "convviz-check: warning: unit.npy: values in [0" in err, err
    assert "but the model takes [0, 255]" in err and "Traceback" not in err
    assert _explain(path, tmp_path / "pixels.npy", *args) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_model_with_a_dict_of_outputs_is_explained_on_its_first_output(
    files: dict[str, Path], tmp_path: Path
) -> None:
    import keras
    from keras import layers

    x_in = keras.Input((32, 32, 3))
    g = layers.GlobalAveragePooling2D()(layers.Conv2D(6, 3, activation="relu", name="c")(x_in))
    heads = {"cls": layers.Dense(4, activation="softmax", name="cls")(g)}
    heads["reg"] = layers.Dense(1, name="reg")(g)
    model = keras.Model(x_in, heads)
    seeded_weights(model, 0)
    path = tmp_path / "heads.keras"
    model.save(path)
    out = tmp_path / "out"
    assert _explain(path, files["chelsea_png"], "--out", out, "--steps", "2") == 0
    summary = _check_page(out)
    assert summary["gradcam"]["target"].endswith("@cls"), summary["gradcam"]


def test_grayscale_model_in_minus_one_to_one_from_rgb_png_and_jpeg_of_other_sizes(
    files: dict[str, Path], tmp_path: Path
) -> None:
    import keras

    out = tmp_path / "out"
    rc = _explain(
        files["gray_model"], files["chelsea_png"], files["camera_jpg"],
        "--input-range", "-1", "1", "--out", out, "--steps", "3",
    )  # fmt: skip
    assert rc == 0
    summary = _check_page(out)
    assert summary["input"]["range"] == [-1.0, 1.0]
    assert summary["model"]["input_shape"] == [32, 32, 1]
    assert [i["size"] for i in summary["images"]] == [[300, 451], [512, 512]]
    # what the model saw: 32x32, one channel
    for entry in summary["images"]:
        assert _png(out / entry["input_png"]).shape == (32, 32)
    # overlays at each photo's own size
    overlays = [out / e["maps"]["gradcam"]["overlay"] for e in summary["gradcam"]["images"]]
    assert [_png(p).shape for p in overlays] == [(300, 451, 3), (512, 512, 3)]
    assert summary["activations"]["layers"] and summary["filters"]["count"] == 7
    for layer in summary["activations"]["layers"]:
        assert (out / layer["png"]).is_file()
    assert set(summary["timings"]) >= {"activations", "gradcam", "filters"}
    assert {"keras", "backend", "convviz_check"} <= set(summary["versions"])
    # the predictions are the model's on the photos resized, made gray and mapped
    model = keras.saving.load_model(files["gray_model"])
    expected = []
    for key in ("chelsea_png", "camera_jpg"):
        with Image.open(files[key]) as im:
            gray = np.asarray(im.convert("RGB"), np.float32) @ np.float32([0.299, 0.587, 0.114])
        small = Image.fromarray(gray, mode="F").resize((32, 32), Image.Resampling.BILINEAR)
        expected.append(np.asarray(small)[..., None] / 127.5 - 1.0)
    probs = np.asarray(model.predict(np.stack(expected), verbose=0))
    for entry, row in zip(summary["images"], probs, strict=True):
        top = entry["top"][0]
        assert top["index"] == int(np.argmax(row))
        assert top["score"] == pytest.approx(float(row.max()), abs=1e-4)


def test_fixed_size_rgb_model_from_grayscale_and_rgb_files(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc = _explain(
        files["rgb_model"], files["camera_png"], files["astronaut_jpg"], "--out", out,
        "--steps", "2", "--filters", "3",
    )  # fmt: skip
    assert rc == 0
    summary = _check_page(out)
    assert [i["channels"] for i in summary["images"]] == [1, 3]
    assert [i["model_size"] for i in summary["images"]] == [[40, 48], [40, 48]]
    for entry in summary["images"]:
        assert _png(out / entry["input_png"]).shape == (40, 48, 3)
    shapes = [
        _png(out / e["maps"]["gradcam"]["overlay"]).shape for e in summary["gradcam"]["images"]
    ]
    assert shapes == [(512, 512, 3), (512, 512, 3)]
    gray_input = _png(out / summary["images"][0]["input_png"]).astype(int)
    assert (gray_input[..., 0] == gray_input[..., 2]).all()  # gray repeated to RGB
    assert summary["input"]["range"] == [0.0, 1.0]
    assert "the default" in summary["input"]["range_source"]
    assert capsys.readouterr().out.count("\x1b[") == 0  # no progress display off a terminal


def test_filters_beyond_the_layer_draw_every_filter_with_a_note(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc = _explain(
        files["gray_model"], files["camera_png"], "--what", "filters", "--filters", "99",
        "--filters-layer", "conv_b", "--steps", "2", "--out", out,
    )  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "note: --filters 99: layer 'conv_b' has 7 filters; drew 7" in printed
    summary = _check_page(out)
    assert summary["filters"]["count"] == 7 and summary["filters"]["requested"] == 99
    grid = _png(out / summary["filters"]["png"])
    expected = filter_grid(np.zeros((7, 24, 24, 1), np.uint8))  # 32 px minus the 12.5% crop
    assert grid.shape[:2] == expected.shape[:2]
    assert summary["gradcam"] is None and summary["activations"] is None


def test_gradcam_layer_and_class_flags_choose_what_is_drawn(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    rc = _explain(
        files["rgb_model"], files["astronaut_jpg"], "--what", "gradcam",
        "--gradcam-layer", "conv_a", "--class", "2", "--out", out,
    )  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gradcam"]["layer"] == "conv_a"
    assert summary["gradcam"]["images"][0]["class_index"] == 2


def test_two_cam_methods_are_drawn_side_by_side_and_recorded(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc = _explain(
        files["rgb_model"], files["astronaut_jpg"], files["camera_png"], "--what", "gradcam",
        "--cam", "gradcam", "scorecam", "--class", "1", "--out", out,
    )  # fmt: skip
    assert rc == 0
    summary = _check_page(out)
    cam = summary["gradcam"]
    assert cam["methods"] == ["gradcam", "scorecam"]
    assert set(cam["seconds"]) == {"gradcam", "scorecam"}
    page = (out / "index.html").read_text(encoding="utf-8")
    for entry in cam["images"]:
        assert list(entry["maps"]) == ["gradcam", "scorecam"]
        assert entry["class_index"] == 1
        grad, score = (out / entry["maps"][m]["overlay"] for m in ("gradcam", "scorecam"))
        assert _png(grad).shape == _png(score).shape == (512, 512, 3)
        assert not np.array_equal(_png(grad), _png(score))  # two different maps
        # each overlay sits under its method's name, in the order asked
        at = [page.index(entry["maps"][m]["overlay"]) for m in ("gradcam", "scorecam")]
        titles = [page.rindex("Grad-CAM</div>", 0, at[0]), page.rindex("Score-CAM</div>", 0, at[1])]
        assert titles[0] < at[0] < titles[1] < at[1]
    assert "<h2>Class-activation maps</h2>" in page
    assert "Score-CAM</b>: channels weighted by the class score" in page
    printed = capsys.readouterr().out
    assert "cam: gradcam, scorecam; layer 'conv_b'" in printed


def test_cam_options_reach_the_methods_that_take_them(
    files: dict[str, Path], tmp_path: Path
) -> None:
    import keras

    from convviz_check.cli import images as img_lib
    from convviz_check.explain.cam import cam

    out = tmp_path / "out"
    rc = _explain(
        files["rgb_model"], files["camera_png"], "--what", "gradcam", "--out", out,
        "--cam", "scorecam", "gradcam", "--cam-option", "max_channels=2",
    )  # fmt: skip
    assert rc == 0
    summary = _check_page(out)
    assert summary["gradcam"]["options"] == {"scorecam": {"max_channels": 2}, "gradcam": {}}
    model = keras.saving.load_model(files["rgb_model"])
    prep = img_lib.prepare(model, img_lib.read_sources([str(files["camera_png"])]))
    capped = cam(model, prep.gradcam_images, method="scorecam", max_channels=2)
    every = cam(model, prep.gradcam_images, method="scorecam")
    assert not np.allclose(capped.heatmap, every.heatmap)  # the cap changes the map
    drawn = overlay(_png(files["camera_png"]), capped.heatmap[0], value_range=(0.0, 255.0))
    entry = summary["gradcam"]["images"][0]
    np.testing.assert_array_equal(_png(out / entry["maps"]["scorecam"]["overlay"]), drawn)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--cam", "gradcam", "--cam-option", "max_channels=2"],
            "No --cam method takes option(s) max_channels",
        ),
        (["--cam-option", "=3"], "A CAM option is NAME=VALUE"),
    ],
)
def test_cam_options_no_method_takes_are_refused(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], extra, message
) -> None:
    rc = _explain(files["rgb_model"], files["camera_png"], "--out", tmp_path / "o", *extra)
    assert rc == 2
    assert message in capsys.readouterr().err


def test_cam_methods_match_the_library_and_files_after_cam_are_images(
    files: dict[str, Path], tmp_path: Path
) -> None:
    import keras

    from convviz_check.cli import images as img_lib
    from convviz_check.explain.cam import cam

    out = tmp_path / "out"
    rc = _explain(
        files["rgb_model"], "--what", "gradcam", "--out", out,
        "--cam", "eigencam,gradcam++", "eigencam", files["camera_png"],
    )  # fmt: skip
    assert rc == 0
    summary = _check_page(out)
    assert summary["gradcam"]["methods"] == ["eigencam", "gradcam++"]  # repeats dropped
    assert [i["name"] for i in summary["images"]] == ["camera_gray.png"]
    model = keras.saving.load_model(files["rgb_model"])
    prep = img_lib.prepare(model, img_lib.read_sources([str(files["camera_png"])]))
    expected = cam(model, prep.gradcam_images, method="eigencam")
    entry = summary["gradcam"]["images"][0]
    assert entry["class_index"] == int(expected.class_index[0])
    assert entry["score"] == pytest.approx(float(expected.score[0]), rel=1e-6)
    # the overlay is the library's map drawn over the photo at its own size
    photo = _png(files["camera_png"])
    drawn = overlay(photo, expected.heatmap[0], value_range=(0.0, 255.0))
    np.testing.assert_array_equal(_png(out / entry["maps"]["eigencam"]["overlay"]), drawn)


def test_images_may_follow_the_options(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = main(
        ["explain", str(files["rgb_model"]), "--out", str(out), "--what", "gradcam",
         str(files["camera_png"]), str(files["chelsea_png"])]
    )  # fmt: skip
    assert rc == 0
    assert len(json.loads((out / "summary.json").read_text())["images"]) == 2


def test_imagenet_class_name_is_resolved_for_a_1000_class_model(tmp_path: Path) -> None:
    pytest.importorskip("keras_hub")
    model = _convnet((16, 16, 3), 1000, tmp_path / "imagenet.keras")
    image = tmp_path / "x.png"
    Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(image)
    out = tmp_path / "out"
    assert _explain(model, image, "--what", "gradcam", "--class", "tabby", "--out", out) == 0
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["gradcam"]["images"][0]
    assert (entry["class_index"], entry["class_name"]) == (281, "tabby")
    assert all(t["name"] for t in summary["images"][0]["top"])  # names in the top classes


# --------------------------------------------------------------------------- errors
def _error_case(files: dict[str, Path], name: str, tmp_path: Path) -> list[str]:
    photo = files["camera_png"]
    cases = {
        "missing file": [files["gray_model"], tmp_path / "absent.png"],
        "unreadable image": [files["gray_model"], files["text_png"]],
        "unknown gradcam layer": [files["gray_model"], photo, "--gradcam-layer", "nope"],
        "unknown filters layer": [files["gray_model"], photo, "--filters-layer", "nope"],
        "filters layer too small": [files["small_model"], photo, "--filters-layer", "conv_b"],
        "LO >= HI": [files["gray_model"], photo, "--input-range", "1", "1"],
        "class name on a 4-class model": [files["gray_model"], photo, "--class", "tabby"],
        "removed flag": [files["gray_model"], "--images", photo],
        "technique as image": [files["gray_model"], photo, "--what", "activations", "gradcam"],
        "unknown CAM method": [files["gray_model"], photo, "--cam", "gradcam", "gradcamm"],
        "--cam without gradcam": [
            files["gray_model"],
            photo,
            "--what",
            "filters",
            "--cam",
            "scorecam",
        ],
    }
    return [str(a) for a in cases[name]]


@pytest.mark.parametrize(
    "case, phrase",
    [
        ("missing file", "Image file not found"),
        ("unreadable image", "Cannot read image file"),
        ("unknown gradcam layer", "Unknown layer"),
        ("unknown filters layer", "Unknown layer for --filters-layer"),
        (
            "filters layer too small",
            "is 4 cells on its smaller side, too small for the 2-cell border the "
            "filter-pattern loss leaves out. Received: --filters-layer conv_b. Expected a "
            "layer whose map is larger than 4x4, e.g. --filters-layer conv_a.",
        ),
        ("LO >= HI", "--input-range needs finite LO < HI"),
        ("class name on a 4-class model", "--class must be a class index in [0, 4)"),
        ("removed flag", "--images was removed"),
        ("technique as image", "'gradcam' is a technique, not an image"),
        (
            "unknown CAM method",
            "Unknown CAM method. Received: --cam 'gradcamm'. Expected one or more of: gradcam, "
            "gradcam++, xgradcam, hirescam, layercam, scorecam, eigencam.",
        ),
        ("--cam without gradcam", "Expected --what to include gradcam"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    phrase: str,
) -> None:
    out = tmp_path / "out"
    rc = _explain(*_error_case(files, case, tmp_path), "--out", out)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2
    assert len(lines) == 1, err
    assert lines[0].startswith("convviz-check: error: ") and phrase in lines[0]
    assert "Traceback" not in err
    assert not out.exists() or not any(out.rglob("*.png"))


def test_unknown_imagenet_class_name_exits_2_with_suggestions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("keras_hub")
    model = _convnet((16, 16, 3), 1000, tmp_path / "imagenet.keras")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    rc = _explain(model, image, "--class", "tabby cats", "--out", tmp_path / "out")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "Unknown class name" in err[0] and "tabby" in err[0]


def test_debug_adds_the_traceback(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["explain", str(files["gray_model"]), str(tmp_path / "absent.png"), "--out"]
    assert main(["--debug", *argv, str(tmp_path / "o")]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert main([*argv, str(tmp_path / "o"), "--debug"]) == 2  # after the subcommand too
    assert "Traceback" in capsys.readouterr().err


# --------------------------------------------------------------------------- warnings
def test_explain_emits_no_deprecation_warning_from_convviz_check(
    files: dict[str, Path], tmp_path: Path
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(
            ["--verbose", "explain", str(files["gray_model"]), str(files["chelsea_png"]),
             "--input-range", "-1", "1", "--steps", "2", "--out", str(tmp_path / "o")]
        )  # fmt: skip
    assert rc == 0
    ours = [
        f"{w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if issubclass(w.category, DeprecationWarning)
        and Path(w.filename).resolve().is_relative_to(PACKAGE_DIR)
    ]
    assert not ours, "\n".join(ours)


# --------------------------------------------------------------------------- subprocess
def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convviz_check", "explain", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_explain_on_the_bundled_model_with_scenes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run(
        str(model_path("convnet")), "--scenes", "2", "--out", str(out), "--filters", "2",
        "--steps", "3",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cam: gradcam; layer" in proc.stdout
    assert not proc.stderr.strip(), proc.stderr  # quiet: no framework start-up logs
    summary = _check_page(out)
    assert len(summary["gradcam"]["images"]) == 2
    overlay = summary["gradcam"]["images"][0]["maps"]["gradcam"]["overlay"]
    assert _png(out / overlay).shape == (64, 64, 3)


def test_explain_reports_a_bad_model_source_clearly(tmp_path: Path) -> None:
    proc = _run(str(tmp_path / "absent.keras"), "--scenes", "1", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "no such file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_every_activation_channel_is_numbered_in_a_small_layer_as_in_a_large_one(
    tmp_path: Path,
) -> None:
    import keras
    from keras import layers

    import convviz_check as cc
    from convviz_check.report.channels import numbered_channel_grid

    x_in = keras.Input((12, 12, 1))
    x = layers.Conv2D(2, 3, activation="tanh", name="few")(x_in)  # 10x10x2
    x = layers.Conv2D(20, 3, activation="tanh", name="many")(x)  # 8x8x20: two rows
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(x_in, layers.Dense(2, name="head")(x))
    seeded_weights(model, 3)
    model.save(tmp_path / "m.keras")
    image = np.random.default_rng(0).uniform(0, 1, (12, 12, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", image)  # a float array: in the model's range as it is
    out = tmp_path / "out"
    assert (
        _explain(tmp_path / "m.keras", tmp_path / "x.npy", "--out", out, "--what", "activations")
        == 0
    )
    summary = _check_page(out)
    acts = cc.activations(model, image[None])
    drawn = {layer["name"]: _png(out / layer["png"]) for layer in summary["activations"]["layers"]}
    assert set(drawn) == {"few", "many"}
    for name, picture in drawn.items():
        np.testing.assert_array_equal(picture, numbered_channel_grid(acts[name][0]))
    assert "numbered from 0" in (out / "index.html").read_text(encoding="utf-8")
