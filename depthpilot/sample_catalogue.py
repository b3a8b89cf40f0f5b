"""The sample-data catalogue: which public recordings the project uses and where each comes from.

Pure data, no I/O. Every file comes from a public GitHub repository at a **pinned commit**, so its
bytes (and therefore its sha256) never change:

    https://raw.githubusercontent.com/{repo}/{commit}/{path in repo}

:data:`MANIFEST` is a static copy of the ``Files`` tables of each dataset's ``PROVENANCE.md``
(checked against the real files by ``tests/test_sample_data.py``). :mod:`depthpilot.sample_data`
downloads and verifies them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

DEFAULT_BASE_URL = "https://raw.githubusercontent.com"


class SampleDataError(RuntimeError):
    """A sample-data file could not be fetched or failed verification."""


@dataclass(frozen=True)
class Dataset:
    """One folder of the dataset directory and where it comes from."""

    name: str
    repo: str
    commit: str
    licence: str


@dataclass(frozen=True)
class SourceFile:
    """One downloadable raw file.

    ``sha256``/``size`` describe the file as stored under ``<dest>/<dataset>/<path>`` (equal to the
    shared dataset copy). ``upstream_sha256``/``upstream_size`` describe the bytes served at
    :meth:`url` when they differ (``gzip=True``: stored file = gzip of upstream bytes).
    """

    dataset: str
    path: str
    repo: str
    commit: str
    repo_path: str
    sha256: str
    size: int | None = None
    gzip: bool = False
    upstream_sha256: str | None = None
    upstream_size: int | None = None

    @property
    def name(self) -> str:
        """``<dataset>/<path>``: the file's name relative to the data directory."""
        return f"{self.dataset}/{self.path}"

    @property
    def download_sha256(self) -> str:
        return self.upstream_sha256 if self.gzip else self.sha256  # type: ignore[return-value]

    @property
    def download_size(self) -> int | None:
        return self.upstream_size if self.gzip else self.size

    def url(self, base_url: str = DEFAULT_BASE_URL) -> str:
        return f"{base_url.rstrip('/')}/{self.repo}/{self.commit}/{self.repo_path}"


_HFT = "nkaz001/hftbacktest"
_HFT_LICENCE = "MIT (LICENSE at repo root, Copyright (c) 2022 nkaz001@protonmail.com)"
_SPOT = "binance-spot-btcusdt-2024-08-08-l2diff"
_SPOT_COMMIT = "c4183c646c744222812405fb3618a39ab75a4a8d"
_USDM = "binance-usdm-btcusdt-2024-07-18-l2diff"
_USDM_COMMIT = "73bfa1728c130d24b491c4680055769f6fa3742b"
_HYPER = "hyperliquid-btc-l2book-2025-01-26"
_HYPER_COMMIT = "9830f2b4edae600dd10b0fcf41af0a6405fbddd1"
_KLINES = "binance-spot-btcusdt-klines-1m-2024-12"
_KLINES_REPO = "privet1x/crypto-trading-bot"
_KLINES_COMMIT = "5eb7283a4214739178f98a842fcfd12d1365b147"
_CF = "cryptofeed-l2-clips-2021-2022"
_CF_REPO = "bmoscon/cryptofeed"
_CF_COMMIT = "ce58c2a0015040aa2271e80bac783d74fa2cdcff"
_TARDIS = "tardis-format-fixtures"
_NT_REPO = "nautechsystems/nautilus_trader"
_NT_COMMIT = "a95c8042b00133829d252ae8cf68f78fc176a973"

DATASETS: tuple[Dataset, ...] = (
    Dataset(_SPOT, _HFT, _SPOT_COMMIT, _HFT_LICENCE),
    Dataset(_USDM, _HFT, _USDM_COMMIT, _HFT_LICENCE),
    Dataset(_HYPER, _HFT, _HYPER_COMMIT, _HFT_LICENCE),
    Dataset(_KLINES, _KLINES_REPO, _KLINES_COMMIT, "MIT (LICENSE, Copyright (c) 2024 privet1x)"),
    Dataset(
        _CF,
        _CF_REPO,
        _CF_COMMIT,
        "XFree86-1.1-style (LICENSE on master, Copyright (C) 2017-2025 Bryant Moscon); keep the notice "
        'and the acknowledgment "This product includes software developed by Bryant Moscon '
        '(http://www.bryantmoscon.com/)"',
    ),
    Dataset(_TARDIS, _NT_REPO, _NT_COMMIT, "LGPL-3.0 (LICENSE at repo root); keep under LGPL terms"),
)

MANIFEST: tuple[SourceFile, ...] = (
    # Binance spot BTCUSDT L2 diff recording (byte-identical copies)
    SourceFile(
        _SPOT,
        "raw/btcusdt_20240808.gz",
        _HFT,
        _SPOT_COMMIT,
        "examples/spot/btcusdt_20240808.gz",
        "5d263f4c5379cfc27379ef0e22779aa33804463d1b69c292e9c0714e31f2e1b4",
        1274097,
    ),
    SourceFile(
        _SPOT,
        "raw/btcusdt_20240809.gz",
        _HFT,
        _SPOT_COMMIT,
        "examples/spot/btcusdt_20240809.gz",
        "2981a27474b8903133cc66e25f4da561140dd061c942b84801b9d8c60e4b3599",
        1754087,
    ),
    # Binance USD-M BTCUSDT perp L2 diff recording (in history only; byte-identical)
    SourceFile(
        _USDM,
        "raw/btcusdt_20240718.gz",
        _HFT,
        _USDM_COMMIT,
        "examples/usdm/btcusdt_20240718.gz",
        "e4163718b819a93b858d1259bfeb53e170ee31e03738f88e172af74078cd45be",
        572468,
    ),
    SourceFile(
        _USDM,
        "raw/btcusdt_20240719.gz",
        _HFT,
        _USDM_COMMIT,
        "examples/usdm/btcusdt_20240719.gz",
        "33bab357ff6e97be8134efd35d3489794807bedeb47f1a1f6cc81ece65d88b58",
        2568733,
    ),
    # Hyperliquid BTC l2Book capture (byte-identical)
    SourceFile(
        _HYPER,
        "raw/btcusd_20250126.gz",
        _HFT,
        _HYPER_COMMIT,
        "examples/hyperliquid/btcusd_20250126.gz",
        "0e48db38986847092dede9975bf64e108ffa3646a6d2ec1672bd1099627249e1",
        7484,
    ),
    # Binance spot 1m klines: upstream plain CSV, stored gzipped
    SourceFile(
        _KLINES,
        "BTCUSDT_1m.csv.gz",
        _KLINES_REPO,
        _KLINES_COMMIT,
        "data/BTCUSDT_1m.csv",
        "eb5fb96bbd39f1be05c165a225802574920b42947a87d2cb61f59f5f14e7c3cd",
        1319608,
        gzip=True,
        upstream_sha256="465f97f992251ff7da906117e569c2bff32eb425cd62bc459eb8f1ad7dbcac3a",
        upstream_size=4108158,
    ),
    # cryptofeed replay captures: upstream plain text, stored gzipped
    SourceFile(
        _CF,
        "raw/BITMEX.ws.1.0.gz",
        _CF_REPO,
        _CF_COMMIT,
        "sample_data/BITMEX.ws.1.0",
        "c0c30e9045fd019a27c17c626b238e1a22498c8f8919942ccfa0de4d5910634e",
        122498,
        gzip=True,
        upstream_sha256="2a6832e6c3b2c0a6c0c2591158c76320a7aa16e11e0750575f84a02672b0ee09",
        upstream_size=1283881,
    ),
    SourceFile(
        _CF,
        "raw/BYBIT.ws.26.0.gz",
        _CF_REPO,
        _CF_COMMIT,
        "sample_data/BYBIT.ws.26.0",
        "ad3be1a390a504e0862e17df120d33167b0c0c22b8e17b82488de02053e2b611",
        38616,
        gzip=True,
        upstream_sha256="0cbca0c72261bd1ff6c42d7011313da3dab1be7b24c8be9d9990e1b5ebd3d40d",
        upstream_size=429664,
    ),
    SourceFile(
        _CF,
        "raw/KRAKEN_FUTURES.ws.1.0.gz",
        _CF_REPO,
        _CF_COMMIT,
        "sample_data/KRAKEN_FUTURES.ws.1.0",
        "617c1a7ac79281720695113bbd6f6e9b8d7a686a9bee8654b4ecaa38e90c5531",
        144355,
        gzip=True,
        upstream_sha256="e31ebfee740d41b3084f7ed72d1c2711430b861e0c93347f03cc526381931040",
        upstream_size=1271096,
    ),
    SourceFile(
        _CF,
        "raw/OKX.ws.1.0.gz",
        _CF_REPO,
        _CF_COMMIT,
        "sample_data/OKX.ws.1.0",
        "97dd55bf2332e755925be5003904a47869bfbff1a1cc480440c5aab0ccf1388f",
        45851,
        gzip=True,
        upstream_sha256="a9b65fb84bda877ac799d3afe6e3630f0929751b31c6fa1bb4a55e0e6aceac91",
        upstream_size=294370,
    ),
    # NautilusTrader test fixtures: Tardis / Binance CSV / Bybit ob500 formats (byte-identical)
    SourceFile(
        _TARDIS,
        "binance-futures_book_snapshot_25_BTCUSDT.csv",
        _NT_REPO,
        _NT_COMMIT,
        "tests/test_data/tardis/binance-futures_book_snapshot_25_BTCUSDT.csv",
        "d3b40b6b35d3703ee40e67c60c96387179fe0bf4886e975361a87f4720fa0ea2",
        9270,
    ),
    SourceFile(
        _TARDIS,
        "binance-futures_book_snapshot_5_BTCUSDT.csv",
        _NT_REPO,
        _NT_COMMIT,
        "tests/test_data/tardis/binance-futures_book_snapshot_5_BTCUSDT.csv",
        "65f8b70744bacbbf64091e3b912a9fbbab6b287b6cf0cb99b403f61323655c01",
        2350,
    ),
    SourceFile(
        _TARDIS,
        "bitmex_trades_XBTUSD.csv",
        _NT_REPO,
        _NT_COMMIT,
        "tests/test_data/tardis/bitmex_trades_XBTUSD.csv",
        "4ebcc8565f4941ff8879da65f2084cce127a5054edcf038a678fc13cc3eacc25",
        1056,
    ),
    SourceFile(
        _TARDIS,
        "btcusdt-depth-snap.csv",
        _NT_REPO,
        _NT_COMMIT,
        "tests/test_data/binance/btcusdt-depth-snap.csv",
        "470ab6a3ced7da91c951db297a233f04546ed145cc63802a7507852c09f484bb",
        7582,
    ),
    SourceFile(
        _TARDIS,
        "btcusdt-depth-update.csv",
        _NT_REPO,
        _NT_COMMIT,
        "tests/test_data/binance/btcusdt-depth-update.csv",
        "884fe4ad52cdee4917149d268fb9730c6641bd386d8e297e187f7eaea08573da",
        8585,
    ),
    SourceFile(
        _TARDIS,
        "deribit_incremental_book_L2_BTC-PERPETUAL.csv",
        _NT_REPO,
        _NT_COMMIT,
        "tests/test_data/tardis/deribit_incremental_book_L2_BTC-PERPETUAL.csv",
        "40b3cdd0253172d248939e877047e65061c7f6de4d56dd190b0b603a5eb6a66b",
        1221,
    ),
    SourceFile(
        _TARDIS,
        "xrpusdt-ob500.data.zip",
        _NT_REPO,
        _NT_COMMIT,
        "tests/test_data/bybit/xrpusdt-ob500.data.zip",
        "5e53f958e58340da19e8fd00be203fed6032eb92155f0430f0deca3076aad314",
        80538,
    ),
)

#: Files produced locally from the raw recordings (``dataset``, ``path``). Not in any source repo,
#: so not downloadable: :func:`fetch` skips them.
DERIVED: tuple[tuple[str, str], ...] = (
    (_SPOT, "derived_book_snapshot_25.csv.gz"),
    (_SPOT, "derived_trades.csv.gz"),
    (_USDM, "derived_book_snapshot_25.csv.gz"),
    (_USDM, "derived_trades.csv.gz"),
    (_HYPER, "derived_book_snapshot_20.csv"),
    (_HYPER, "derived_trades.csv"),
)

DATASET_NAMES: tuple[str, ...] = tuple(d.name for d in DATASETS)

#: The Binance BTCUSDT L2-diff recordings by market (``spot``, ``usdm``): the dataset directory
#: names the bench scripts use, so a renamed dataset is changed here only.
BINANCE_L2DIFF: Mapping[str, str] = MappingProxyType({"spot": _SPOT, "usdm": _USDM})
#: The Binance BTCUSDT 1-minute klines dataset (the candle model's training data).
BINANCE_KLINES_1M: str = _KLINES


def file_name(dataset: str, path: str) -> str:
    """``<dataset>/<path>`` of a catalogued file (manifest or derived); one not catalogued ->
    SampleDataError naming it."""
    if any(f.dataset == dataset and f.path == path for f in MANIFEST) or (dataset, path) in DERIVED:
        return f"{dataset}/{path}"
    raise SampleDataError(f"{dataset}/{path} is not in the sample-data catalogue")


def files(datasets: Iterable[str] | None = None) -> list[SourceFile]:
    """Manifest entries of the named datasets (all when ``None``); unknown name -> SampleDataError."""
    if datasets is None:
        return list(MANIFEST)
    wanted = list(datasets)
    unknown = sorted(set(wanted) - set(DATASET_NAMES))
    if unknown:
        raise SampleDataError(f"unknown dataset(s) {unknown}; choose from {list(DATASET_NAMES)}")
    return [f for f in MANIFEST if f.dataset in wanted]
