"""Symbol master of the simulated market: real KRX codes and names, synthetic price levels.

Prices are rough levels around the reference date (``REFERENCE_DAY``) and listed shares are round numbers;
both only shape the synthetic market, they are not market data. ``SPLITS`` lists the corporate actions the
sandbox simulates so that the adjusted-price flags of the chart TRs have something to adjust; the one
default split is fictitious and dated inside the default history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

REFERENCE_DAY = date(2026, 1, 2)  # base_price is the close of this day (adjusted for later splits)


@dataclass(frozen=True, slots=True)
class Symbol:
    """One listed stock."""

    code: str  # six-digit KRX short code
    name_ko: str
    name_en: str
    market: str  # KOSPI or KOSDAQ
    base_price: int  # KRW, close on REFERENCE_DAY
    listed_shares: int  # shares
    daily_volume: int  # shares per day, typical


_ROWS: tuple[tuple[str, str, str, str, int, int, int], ...] = (
    # code, Korean name, English name, market, base price KRW, listed shares (M), daily volume (k)
    ("005930", "삼성전자", "Samsung Electronics", "KOSPI", 71_000, 5_969, 15_000),
    ("005935", "삼성전자우", "Samsung Electronics Pref", "KOSPI", 58_000, 822, 1_500),
    ("000660", "SK하이닉스", "SK hynix", "KOSPI", 182_000, 728, 3_000),
    ("035420", "NAVER", "NAVER", "KOSPI", 198_000, 158, 600),
    ("035720", "카카오", "Kakao", "KOSPI", 41_500, 443, 1_800),
    ("005380", "현대차", "Hyundai Motor", "KOSPI", 221_000, 209, 700),
    ("000270", "기아", "Kia", "KOSPI", 96_500, 397, 1_100),
    ("051910", "LG화학", "LG Chem", "KOSPI", 312_000, 71, 250),
    ("006400", "삼성SDI", "Samsung SDI", "KOSPI", 254_000, 69, 300),
    ("207940", "삼성바이오로직스", "Samsung Biologics", "KOSPI", 905_000, 71, 60),
    ("068270", "셀트리온", "Celltrion", "KOSPI", 181_500, 217, 700),
    ("005490", "POSCO홀딩스", "POSCO Holdings", "KOSPI", 352_000, 85, 300),
    ("373220", "LG에너지솔루션", "LG Energy Solution", "KOSPI", 384_000, 234, 250),
    ("105560", "KB금융", "KB Financial Group", "KOSPI", 81_200, 394, 1_200),
    ("055550", "신한지주", "Shinhan Financial Group", "KOSPI", 50_300, 509, 1_300),
    ("086790", "하나금융지주", "Hana Financial Group", "KOSPI", 61_900, 290, 900),
    ("032830", "삼성생명", "Samsung Life Insurance", "KOSPI", 92_400, 200, 250),
    ("012330", "현대모비스", "Hyundai Mobis", "KOSPI", 236_500, 92, 200),
    ("028260", "삼성물산", "Samsung C&T", "KOSPI", 131_000, 170, 400),
    ("066570", "LG전자", "LG Electronics", "KOSPI", 91_300, 163, 600),
    ("003550", "LG", "LG Corp", "KOSPI", 79_800, 157, 250),
    ("017670", "SK텔레콤", "SK Telecom", "KOSPI", 52_600, 214, 400),
    ("030200", "KT", "KT Corp", "KOSPI", 41_250, 252, 700),
    ("034730", "SK", "SK Inc", "KOSPI", 152_300, 73, 150),
    ("015760", "한국전력", "KEPCO", "KOSPI", 22_150, 642, 2_500),
    ("096770", "SK이노베이션", "SK Innovation", "KOSPI", 113_400, 151, 400),
    ("009150", "삼성전기", "Samsung Electro-Mechanics", "KOSPI", 141_800, 75, 350),
    ("018260", "삼성에스디에스", "Samsung SDS", "KOSPI", 152_900, 77, 150),
    ("011200", "HMM", "HMM", "KOSPI", 18_430, 1_025, 3_000),
    ("010130", "고려아연", "Korea Zinc", "KOSPI", 512_000, 21, 40),
    ("259960", "크래프톤", "Krafton", "KOSPI", 301_500, 48, 120),
    ("036570", "엔씨소프트", "NCSoft", "KOSPI", 203_000, 21, 100),
    ("251270", "넷마블", "Netmarble", "KOSPI", 50_100, 86, 200),
    ("003670", "포스코퓨처엠", "POSCO Future M", "KOSPI", 251_000, 77, 300),
    ("000100", "유한양행", "Yuhan", "KOSPI", 101_200, 80, 400),
    ("033780", "KT&G", "KT&G", "KOSPI", 90_700, 121, 300),
    ("024110", "기업은행", "Industrial Bank of Korea", "KOSPI", 14_180, 797, 2_000),
    ("316140", "우리금융지주", "Woori Financial Group", "KOSPI", 14_520, 743, 2_200),
    ("010140", "삼성중공업", "Samsung Heavy Industries", "KOSPI", 9_870, 880, 6_000),
    ("042660", "한화오션", "Hanwha Ocean", "KOSPI", 31_400, 306, 1_500),
    ("003490", "대한항공", "Korean Air", "KOSPI", 22_300, 368, 1_400),
    ("000810", "삼성화재", "Samsung Fire & Marine", "KOSPI", 332_500, 47, 80),
    ("010950", "S-Oil", "S-Oil", "KOSPI", 61_800, 112, 300),
    ("009540", "HD한국조선해양", "HD Korea Shipbuilding", "KOSPI", 162_700, 71, 250),
    ("329180", "HD현대중공업", "HD Hyundai Heavy Industries", "KOSPI", 281_000, 89, 200),
    ("012450", "한화에어로스페이스", "Hanwha Aerospace", "KOSPI", 412_000, 51, 200),
    ("047810", "한국항공우주", "Korea Aerospace Industries", "KOSPI", 54_300, 97, 500),
    ("000720", "현대건설", "Hyundai E&C", "KOSPI", 33_850, 111, 700),
    ("006800", "미래에셋증권", "Mirae Asset Securities", "KOSPI", 8_960, 613, 2_500),
    ("138040", "메리츠금융지주", "Meritz Financial Group", "KOSPI", 104_300, 190, 300),
    ("323410", "카카오뱅크", "KakaoBank", "KOSPI", 22_950, 476, 1_300),
    ("377300", "카카오페이", "Kakao Pay", "KOSPI", 31_700, 134, 500),
    ("352820", "하이브", "HYBE", "KOSPI", 213_500, 41, 150),
    ("090430", "아모레퍼시픽", "Amorepacific", "KOSPI", 127_400, 58, 200),
    ("034020", "두산에너빌리티", "Doosan Enerbility", "KOSPI", 19_870, 640, 5_000),
    ("247540", "에코프로비엠", "EcoPro BM", "KOSDAQ", 171_300, 97, 500),
    ("086520", "에코프로", "EcoPro", "KOSDAQ", 88_400, 133, 700),
    ("028300", "HLB", "HLB", "KOSDAQ", 64_100, 131, 900),
    ("196170", "알테오젠", "Alteogen", "KOSDAQ", 312_500, 53, 300),
    ("263750", "펄어비스", "Pearl Abyss", "KOSDAQ", 38_650, 64, 300),
    ("293490", "카카오게임즈", "Kakao Games", "KOSDAQ", 19_320, 83, 600),
    ("041510", "에스엠", "SM Entertainment", "KOSDAQ", 82_700, 23, 150),
    ("035900", "JYP Ent.", "JYP Entertainment", "KOSDAQ", 61_200, 35, 250),
)

SYMBOLS: dict[str, Symbol] = {
    row[0]: Symbol(row[0], row[1], row[2], row[3], row[4], row[5] * 1_000_000, row[6] * 1_000)
    for row in _ROWS
}

# code -> ((first day at the new price, ratio), ...): before that day raw prices are ratio times higher.
SPLITS: dict[str, tuple[tuple[date, int], ...]] = {
    "035720": ((date(2025, 6, 2), 5),),  # fictitious 5:1 split so adjusted and raw prices differ
}


def symbol(code: str) -> Symbol | None:
    """The symbol for a six-digit code, or None."""
    return SYMBOLS.get(code)
