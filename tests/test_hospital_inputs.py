"""DICOM cines, frame folders and still images through the decode stage, and privacy: real
files written with pydicom, Pillow and PyAV, decoded by the real readers."""

import io
import tarfile
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    MPEG4HP41,
    ExplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGLSLossless,
    generate_uid,
)
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import DecodeConfig
from pipeline.data.dicom import DicomDecoder, patient_group
from pipeline.data.images import FrameFolderReader, natural_key
from pipeline.data.ingest import ingest
from pipeline.data.manifest import load_manifest
from pipeline.data.scan_area import VariationStats, estimate
from pipeline.data.synthetic import FORMATS, ClipSpec, write_dataset
from pipeline.data.synthetic_exports import (
    PATIENT_ID,
    PATIENT_NAME,
    export_frames,
    overlay_pixels,
    write_dicom_cine,
    write_exports,
)

SPEC = ClipSpec("covid", 1, 1, 10, 1.0, (48, 64), FORMATS[0], seed=5)


def dicom(path: Path, frames: np.ndarray | None, syntax=ExplicitVRLittleEndian,
          photometric: str = "MONOCHROME2", bits: int = 8, pixel_data: bytes | None = None,
          **tags) -> Path:
    """A US multi-frame DICOM of ``frames`` (n, rows, cols[, 3]) with ``tags``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    data = FileDataset(path.name, {}, file_meta=meta, preamble=b"\0" * 128)
    data.SOPClassUID, data.Modality = meta.MediaStorageSOPClassUID, "US"
    data.PatientName, data.PatientID = PATIENT_NAME, PATIENT_ID
    if frames is not None:
        data.NumberOfFrames, data.Rows, data.Columns = frames.shape[:3]
        data.SamplesPerPixel = 3 if frames.ndim == 4 else 1
        if frames.ndim == 4:
            data.PlanarConfiguration = 0
        data.PhotometricInterpretation = photometric
        data.BitsAllocated = 16 if bits > 8 else 8
        data.BitsStored, data.HighBit, data.PixelRepresentation = bits, bits - 1, 0
        data.PixelData = frames.tobytes() if pixel_data is None else pixel_data
    for keyword, value in tags.items():
        setattr(data, keyword, value)
    data.save_as(path, enforce_file_format=True)
    return path


def frames_of(spec: ClipSpec = SPEC) -> np.ndarray:
    return np.stack([np.asarray(frame.convert("L")) for frame in export_frames(spec)])


def decoded(path: Path, rate: float = 1000, **config) -> tuple[DicomDecoder, list]:
    with DicomDecoder(path, **config) as reader:
        return reader, list(reader.sample(rate))


def test_native_cine_decodes_exactly_with_its_frame_times(tmp_path):
    frames = frames_of()
    path = dicom(tmp_path / "a.dcm", frames, FrameTime="100")
    reader, kept = decoded(path)
    assert len(kept) == len(frames) == reader.frames
    for frame, pixels in zip(kept, frames, strict=True):
        assert np.array_equal(np.asarray(frame.image)[..., 0], pixels)
    assert [frame.timestamp for frame in kept[:3]] == [0, Fraction(1, 10), Fraction(2, 10)]
    assert reader.info.nominal_fps == pytest.approx(10)


def test_frame_time_vector_wins_and_the_3_fps_rule_applies_by_time(tmp_path):
    frames = frames_of()[:6]
    path = dicom(tmp_path / "v.dcm", frames, FrameTime="10",  # ignored: the vector is first
                 FrameTimeVector=["0", "100", "100", "400", "10", "10"])
    _, kept = decoded(path, rate=3)
    # times 0, .1, .2, .6, .61, .62 s: slots 0, 0, 0, 1, 1, 1 -> frames 0 and 3
    assert [(frame.frame_index, frame.timestamp) for frame in kept] == [
        (0, 0), (3, Fraction(6, 10))]


def test_jpeg_baseline_ybr_cine_decodes_close_to_its_frames(tmp_path):
    spec = replace(SPEC, size=(64, 80))
    write_dicom_cine(spec, tmp_path / "j.dcm", compressed=True, timing="frame_time")
    reader, kept = decoded(tmp_path / "j.dcm")
    reference = frames_of(spec)
    assert reader.info.codec == "JPEG Baseline (Process 1)" and len(kept) == len(reference)
    error = np.abs(np.asarray(kept[4].image.convert("L"), float) - reference[4]).mean()
    assert error < 6


def test_jpeg_ls_is_decoded_by_pyjpegls(tmp_path):
    frames = frames_of()[:3]
    import jpeg_ls  # noqa: PLC0415 - the optional codec under test
    encoded = encapsulate([jpeg_ls.encode(frame).tobytes() for frame in frames])
    path = dicom(tmp_path / "ls.dcm", frames, JPEGLSLossless, pixel_data=encoded,
                 FrameTime="100")
    _, kept = decoded(path)
    assert all(np.array_equal(np.asarray(k.image)[..., 0], f)
               for k, f in zip(kept, frames, strict=True))


def test_encapsulated_h264_goes_to_pyav(tmp_path):
    stream = io.BytesIO()
    with av.open(stream, "w", format="h264") as output:
        video = output.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        for pixels in frames_of()[:10]:
            frame = av.VideoFrame.from_ndarray(np.repeat(pixels[..., None], 3, 2), format="rgb24")
            output.mux(video.encode(frame))
        output.mux(video.encode(None))
    path = dicom(tmp_path / "h.dcm", frames_of()[:10], MPEG4HP41,
                 photometric="YBR_PARTIAL_420", pixel_data=encapsulate([stream.getvalue()]))
    reader, kept = decoded(path, rate=3)
    assert reader.info.codec == "h264" and len(kept) >= 3


def test_monochrome1_is_inverted_and_16_bit_scaled(tmp_path):
    frames = np.zeros((2, 8, 8), np.uint16)
    frames[:, :, :4] = 4095  # 12-bit white on the left
    _, kept = decoded(dicom(tmp_path / "m.dcm", frames, photometric="MONOCHROME1", bits=12,
                            FrameTime="100"))
    image = np.asarray(kept[0].image)[..., 0]
    assert image[0, 0] == 0 and image[0, 7] == 255  # white stored, black shown, and reverse


@pytest.mark.parametrize(("name", "make", "status", "fragment"), [
    ("no_pixels", lambda p: dicom(p, None), "no_pixel_data", "without pixel data"),
    ("cut", lambda p: dicom(p, frames_of()[:4], pixel_data=frames_of()[:4].tobytes()[:-500],
                            FrameTime="100"), "truncated", "holds 3 of the 4 frames"),
    ("too_many", lambda p: dicom(p, frames_of()[:4], NumberOfFrames=2, FrameTime="100"),
     "inconsistent", "NumberOfFrames says 2"),
    ("untimed", lambda p: dicom(p, frames_of()[:4]), "no_timing", "decode.assume_fps"),
    ("lossless", lambda p: dicom(p, frames_of()[:2], JPEGLosslessSV1,
                                 pixel_data=encapsulate([b"\xff\xd8", b"\xff\xd8"]),
                                 FrameTime="100"), "unsupported", "has no decoder installed"),
    ("broken_jpeg", lambda p: dicom(p, frames_of()[:2], pydicom.uid.JPEGBaseline8Bit,
                                    pixel_data=encapsulate([b"\xff\xd8junk", b"\xff\xd8junk"]),
                                    FrameTime="100"), "decode_error", "pixel data failed"),
    ("not_dicom", lambda p: p.write_bytes(bytes(128) + b"DICM" + bytes(64)), "unreadable",
     "not a readable DICOM file"),
])
def test_bad_dicom_gets_a_named_status(tmp_path, name, make, status, fragment):
    videos = tmp_path / "videos"
    videos.mkdir()
    make(videos / f"{name}.dcm")
    dicom(videos / "good.dcm", frames_of()[:4], FrameTime="100")
    ingest(videos, None, tmp_path / "out", DecodeConfig(workers=1), progress=False)
    rows = load_manifest(tmp_path / "out").videos.set_index("source_path")
    assert rows.loc[f"{name}.dcm", "status"] == status, rows.loc[f"{name}.dcm", "error"]
    assert fragment in rows.loc[f"{name}.dcm", "error"]
    assert rows.loc["good.dcm", "status"] == "ok"


def test_assume_fps_times_an_untimed_cine(tmp_path):
    reader, kept = decoded(dicom(tmp_path / "u.dcm", frames_of()[:9]), rate=3, assume_fps=6)
    assert [frame.frame_index for frame in kept] == [0, 2, 4, 6, 8]


def test_patient_groups_are_salted_hashes(tmp_path):
    path = dicom(tmp_path / "p.dcm", frames_of()[:2], FrameTime="100")
    group = patient_group(path, "uspipe")
    assert group == patient_group(path, "uspipe") != patient_group(path, "other")
    assert PATIENT_ID not in group and group.startswith("patient-")


def test_frame_folders_take_frames_in_natural_order(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for index in range(12):
        Image.fromarray(np.full((8, 8), index * 20, np.uint8)).save(folder / f"f{index}.png")
    assert sorted((p.name for p in folder.iterdir()), key=natural_key)[:3] == [
        "f0.png", "f1.png", "f2.png"]
    with FrameFolderReader(folder, fps=6) as reader:
        kept = list(reader.sample(3))
    assert [np.asarray(frame.image)[0, 0, 0] for frame in kept] == [0, 40, 80, 120, 160, 200]
    assert [frame.timestamp for frame in kept][:2] == [0, Fraction(1, 3)]


def test_exports_decode_and_nothing_identifying_is_written(tmp_path):
    """The sample's exports through listing and decoding with min_frames 3 (stills stay ok);
    no file written holds the patient's name, id, birth date or any UID of the study."""
    write_dataset(tmp_path / "data", count=2, seed=3, group_prefix="t")
    write_exports(tmp_path / "data", seed=3, group_prefix="t")
    out = tmp_path / "out"
    ingest(tmp_path / "data" / "videos", tmp_path / "data" / "labels.csv", out,
           DecodeConfig(workers=1, min_frames=3), progress=False)
    videos = load_manifest(out).videos.set_index("source_path")
    assert (videos["status"] == "ok").all(), videos["error"].dropna()
    assert videos.loc["stills/still.png", "kept_frames"] == 1
    assert videos.loc["frames/clip_frames", "fps"] == 15
    cines = videos.loc[["hospital/cine_jpeg.dcm", "hospital/cine_native.dcm"]]
    assert cines["group"].nunique() == 1 and cines["group"].iloc[0].startswith("patient-")
    assert "FrameTime" in cines["source_tags"].iloc[0]
    header = pydicom.dcmread(tmp_path / "data/videos/hospital/cine_jpeg.dcm",
                             stop_before_pixels=True)
    secrets = [PATIENT_NAME, PATIENT_ID, "DOE", header.PatientBirthDate, header.StudyDate,
               str(header.StudyInstanceUID), str(header.SOPInstanceUID)]
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [s for s in secrets if s.encode() in data], path
    assert not [s for s in secrets if s in pd.read_parquet(out / "videos.parquet").to_csv()]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("exports")
    write_dataset(folder, count=2, seed=3, group_prefix="t")
    write_exports(folder, seed=3, group_prefix="t")
    return folder


@pytest.mark.parametrize("mode", ["mask", "crop", "crop_and_mask"])
def test_no_overlay_pixel_survives_the_scan_area(exports, tmp_path, mode):
    """Clips with burned-in text, a ruler and a logo around a moving sector (the exports): the
    mask never touches an overlay pixel; crop modes store frames of the mask's box; with
    crop_and_mask every pixel outside the mask is zero; verify checks the mask member."""
    out = tmp_path / "out"
    ingest(exports / "videos", exports / "labels.csv", out,
           DecodeConfig(workers=1, scan_area=mode), progress=False)
    manifest = load_manifest(out)
    exported = manifest.videos[~manifest.videos["source_path"].str.startswith("Cov")]
    assert len(exported) == 5 and (exported["status"] == "ok").all()
    for row in exported.itertuples():
        with tarfile.open(out / row.shard) as tar:
            mask = np.asarray(Image.open(tar.extractfile(f"{row.video_id}/scan_area.png"))) > 0
            frame = manifest.frames_of(row.video_id).iloc[0]
            stored = np.asarray(Image.open(tar.extractfile(frame["member"])).convert("L"))
        assert not (mask & overlay_pixels((mask.shape[1], mask.shape[0]))).any(), row.source_path
        assert 0.4 < row.scan_fraction < 0.95 and row.scan_rule in ("temporal", "intensity")
        x0, y0, x1, y1 = row.scan_box
        if mode == "mask":
            assert stored.shape == mask.shape
        else:
            assert stored.shape == (y1 - y0, x1 - x0)
        if mode == "crop_and_mask":
            outside = ~mask[y0:y1, x0:x1]
            assert stored[outside].max() <= 8  # zero, up to JPEG ringing at the edge

    assert CliRunner().invoke(app, ["verify", "-d", str(out)]).exit_code == 0
    shard = out / exported.iloc[0]["shard"]
    data = bytearray(shard.read_bytes())
    data[512 + 60] ^= 1  # inside the mask PNG, the first member
    shard.write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["verify", "-d", str(out), "--json"])
    assert result.exit_code == 1 and "scan_area.png" in result.output


def test_a_black_still_keeps_the_whole_frame():
    stats = VariationStats()
    stats.add(Image.new("RGB", (20, 10)))
    area = estimate(stats)
    assert area.rule == "whole_frame" and area.box == (0, 0, 20, 10)


def test_rle_palette_and_single_frame_dicom(tmp_path):
    frames = frames_of()[:3]
    path = dicom(tmp_path / "rle.dcm", frames, FrameTime="100")
    data = pydicom.dcmread(path)
    data.compress(pydicom.uid.RLELossless, frames, encoding_plugin="pydicom")
    data.save_as(path, enforce_file_format=True)
    _, kept = decoded(path)
    assert all(np.array_equal(np.asarray(k.image)[..., 0], f)
               for k, f in zip(kept, frames, strict=True))
    palette = np.arange(4, dtype=np.uint8).reshape(1, 2, 2).repeat(2, axis=0)
    lut = dict(RedPaletteColorLookupTableDescriptor=[4, 0, 16],
               GreenPaletteColorLookupTableDescriptor=[4, 0, 16],
               BluePaletteColorLookupTableDescriptor=[4, 0, 16],
               RedPaletteColorLookupTableData=np.array([0, 65535, 0, 0], "<u2").tobytes(),
               GreenPaletteColorLookupTableData=np.array([0, 0, 65535, 0], "<u2").tobytes(),
               BluePaletteColorLookupTableData=np.array([0, 0, 0, 65535], "<u2").tobytes())
    _, kept = decoded(dicom(tmp_path / "pal.dcm", palette, photometric="PALETTE COLOR",
                            FrameTime="100", **lut))
    assert np.asarray(kept[0].image)[0].tolist() == [[0, 0, 0], [255, 0, 0]]
    reader, kept = decoded(dicom(tmp_path / "one.dcm", frames_of()[:1]))  # no timing needed
    assert reader.still and len(kept) == 1
