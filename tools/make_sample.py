"""Generate vault/data/sample.csv: 200 synthetic child records for the demo.

No real person's data. Names are composed at random from common surname and
given-name syllables; streets, house numbers, school names and phone numbers
are random; identity numbers are built with the region code prefix 99, which
GB/T 2260 does not assign to any province, so no real identity number can be
produced. Province, city and district names are real places, so that the
district generalisation of anonymised exports has something real to work on.

Deterministic: the same seed gives the same bytes. Run from the repository root:

    python tools/make_sample.py            # rewrite vault/data/sample.csv
    python tools/make_sample.py --check    # fail if the file differs
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import random
import sys
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from childvault.vault._validators import make_id_number  # noqa: E402

SEED = 20261101
COUNT = 200
REFERENCE_DAY = date(2026, 11, 1)  # ages 0-17 on this day
NOTICE_VERSION = "2026-1"
OUT = ROOT / "childvault" / "vault" / "data" / "sample.csv"

FIELDS = (
    "name",
    "sex",
    "date_of_birth",
    "id_number",
    "address",
    "school",
    "guardian_name",
    "guardian_phone",
    "difficulty_category",
    "health",
    "disability",
    "case_notes",
)
CONSENT = (
    "consent_by",
    "consented_at",
    "notice_version",
    "purposes",
    "retain_until",
    "guardian_informed",
    "guardian_also",
    # Every consent of the migrated register comes with its scanned, signed
    # form: most are older than the back-dating window, so an officer imports
    # the sample with --confirm-backdated (docs/compliance.md, M-12).
    "consent_form_sha256",
)

# "99" is not an assigned province code: these numbers cannot be anyone's.
REGIONS = ("990101", "990102", "990203", "990304", "990405", "990506")

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋"
    "唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶程魏苏吕丁任沈姚卢"
)
GIVEN = {
    "male": "浩宇轩俊博文明家豪天佑泽睿志强建国立新永刚德华振华子梓晨一诺",
    "female": "欣怡涵雨佳嘉思雅婷依梦可馨若雪瑶琪秀兰红霞海燕春梅玉芳丽娟桂英子梓晨一诺",
}
# Real province / prefecture / county-level units (public place names).
PLACES = (
    ("四川省", "成都市", "武侯区"),
    ("四川省", "凉山彝族自治州", "昭觉县"),
    ("河南省", "周口市", "郸城县"),
    ("河南省", "郑州市", "金水区"),
    ("广东省", "深圳市", "龙岗区"),
    ("广东省", "清远市", "连州市"),
    ("甘肃省", "定西市", "通渭县"),
    ("贵州省", "毕节市", "威宁彝族回族苗族自治县"),
    ("湖南省", "邵阳市", "隆回县"),
    ("云南省", "昭通市", "镇雄县"),
    ("广西壮族自治区", "百色市", "田阳区"),
    ("内蒙古自治区", "赤峰市", "敖汉旗"),
    ("北京市", "", "朝阳区"),
    ("重庆市", "", "城口县"),
    ("江西省", "赣州市", "于都县"),
)
STREET_SYLLABLES = "安康福兴和平长青桂花建设幸福光明新华东风红旗文昌育才滨河园林中山人民团结"
STREET_KINDS = ("路", "街", "巷", "大道")
TOWN_KINDS = ("镇", "乡", "街道")
CATEGORIES = (
    ("poverty", 35),
    ("disability", 20),
    ("guardianship_failure", 15),
    ("orphan", 15),
    ("de_facto_unattended", 15),
)
OTHER_PURPOSES = (
    "social_assistance",
    "education_support",
    "medical_care",
    "legal_protection",
    "statistics",
)
MOBILE_PREFIXES = ("135", "138", "139", "150", "152", "158", "177", "182", "187", "189", "199")
AREA_CODES = {"四川省": "028", "河南省": "0371", "广东省": "0755", "北京市": "010"}
HEALTH = (
    "身体健康",
    "营养不良，需定期复查体重",
    "哮喘，随身携带吸入剂",
    "先天性心脏病术后，每半年复查",
    "龋齿较多，已安排口腔治疗",
    "轻度贫血，补充铁剂中",
    "视力下降，已配镜",
)
DISABILITIES = (
    "肢体残疾二级，已办理残疾人证",
    "听力残疾三级，佩戴助听器",
    "视力残疾一级",
    "言语残疾四级，正在康复训练",
    "孤独症谱系障碍，在特教学校就读",
)
NOTES = (
    "{month}月入户走访，居住条件简陋，已申请临时救助。",
    "{month}月电话回访监护人，孩子近况稳定。",
    "{month}月协助办理低保手续，材料已提交。",
    "{month}月联系学校班主任，了解在校表现，情绪较好。",
    "{month}月儿童主任上门核查，监护情况良好。",
    "{month}月转介心理咨询，已完成首次评估。",
    "{month}月协调医疗救助，住院费用已报销。",
)


def _syllables(rng: random.Random, pool: str, count: int) -> str:
    return "".join(rng.choice(pool) for _ in range(count))


def _person_name(rng: random.Random, sex: str, surname: str | None = None) -> str:
    given = _syllables(rng, GIVEN[sex], rng.choice((1, 2, 2)))
    return (surname or rng.choice(SURNAMES)) + given


def _day_between(rng: random.Random, first: date, last: date) -> date:
    return date.fromordinal(rng.randint(first.toordinal(), last.toordinal()))


def _address(rng: random.Random, place: tuple[str, str, str]) -> str:
    province, city, county = place
    head = province + city + county
    if rng.random() < 0.5:
        street = _syllables(rng, STREET_SYLLABLES, 2) + rng.choice(STREET_KINDS)
        number = f"{rng.randint(1, 399)}号"
        if rng.random() < 0.6:
            building, unit = rng.randint(1, 30), rng.randint(1, 4)
            room = f"{rng.randint(1, 18)}0{rng.randint(1, 4)}"
            number += f"{building}栋{unit}单元{room}室"
        return head + street + number
    town = _syllables(rng, STREET_SYLLABLES, 2) + rng.choice(TOWN_KINDS)
    village = _syllables(rng, STREET_SYLLABLES, 2) + "村"
    return f"{head}{town}{village}{rng.randint(1, 12)}组{rng.randint(1, 80)}号"


def _school(rng: random.Random, age: int, place: tuple[str, str, str]) -> str:
    if age < 3 or rng.random() < 0.08:
        return ""
    county = place[2]
    short = county[:2]
    stem = _syllables(rng, STREET_SYLLABLES, 2)
    if age < 6:
        return f"{short}{stem}幼儿园"
    if age < 12:
        return f"{short}{stem}小学"
    if age < 15:
        return f"{short}第{rng.randint(1, 9)}初级中学"
    return rng.choice((f"{short}第{rng.randint(1, 5)}高级中学", f"{short}职业技术学校"))


def _phone(rng: random.Random, place: tuple[str, str, str]) -> str:
    area = AREA_CODES.get(place[0])
    if area is not None and rng.random() < 0.1:
        digits = 8 if len(area) == 3 else 7 + rng.randint(0, 1)
        return f"{area}-{rng.randint(2, 8)}{rng.randint(0, 10 ** (digits - 1) - 1):0{digits - 1}d}"
    return rng.choice(MOBILE_PREFIXES) + f"{rng.randint(0, 99_999_999):08d}"


def _category(rng: random.Random) -> str:
    names = [name for name, _ in CATEGORIES]
    weights = [weight for _, weight in CATEGORIES]
    return rng.choices(names, weights=weights)[0]


def _age_on(birth: date, day: date) -> int:
    return day.year - birth.year - int((day.month, day.day) < (birth.month, birth.day))


def _record(rng: random.Random) -> dict[str, str]:
    birth = _day_between(rng, date(2008, 11, 2), REFERENCE_DAY - timedelta(days=30))
    age = _age_on(birth, REFERENCE_DAY)
    sex = rng.choice(("male", "female"))
    surname = rng.choice(SURNAMES)
    place = rng.choice(PLACES)
    category = _category(rng)

    consented_at = _day_between(rng, max(birth, date(2025, 1, 1)), REFERENCE_DAY)
    age_at_consent = _age_on(birth, consented_at)
    if age_at_consent < 14:
        basis = "guardian"
    else:
        # Some children of 14 or more cannot express a will (M-12): their
        # guardian consents as well; they are given a matching disability.
        basis = "guardian_also" if rng.random() < 0.15 else "child"
    if basis == "guardian_also":
        category = "disability"

    seq = rng.randrange(1 if sex == "male" else 0, 1000, 2)
    id_number = "" if rng.random() < 0.05 else make_id_number(rng.choice(REGIONS), birth, seq)

    if category == "orphan" and rng.random() < 0.4:
        guardian = f"{place[2][:2]}儿童福利院"
    elif rng.random() < 0.6:
        guardian = _person_name(rng, rng.choice(("male", "female")), surname)
    else:
        guardian = _person_name(rng, rng.choice(("male", "female")))

    disability = ""
    if basis == "guardian_also":
        disability = "智力残疾二级，无法表达意愿"
    elif category == "disability":
        disability = rng.choice(DISABILITIES)

    school = _school(rng, age, place)
    # Notes follow the consent: case work starts once the record is made.
    first_month = consented_at.month if consented_at.year == 2026 else 1
    months = sorted(rng.sample(range(first_month, 11), min(rng.randint(1, 3), 11 - first_month)))
    templates = NOTES if school else tuple(n for n in NOTES if "学校" not in n)
    notes = "".join(rng.choice(templates).format(month=m) for m in months)
    purposes = ["case_management"] + [p for p in OTHER_PURPOSES if rng.random() < 0.35]

    return {
        "name": _person_name(rng, sex, surname),
        "sex": sex,
        "date_of_birth": birth.isoformat(),
        "id_number": id_number,
        "address": _address(rng, place),
        "school": school,
        "guardian_name": guardian,
        "guardian_phone": "" if rng.random() < 0.05 else _phone(rng, place),
        "difficulty_category": category,
        "health": rng.choice(HEALTH) if rng.random() < 0.7 else "",
        "disability": disability,
        "case_notes": "2026年" + notes if notes and rng.random() < 0.9 else "",
        "consent_by": "child" if basis == "child" else "guardian",
        "consented_at": consented_at.isoformat(),
        "notice_version": NOTICE_VERSION,
        "purposes": ";".join(purposes),
        "retain_until": _day_between(rng, date(2030, 1, 1), date(2035, 12, 31)).isoformat(),
        "guardian_informed": "yes" if basis == "child" else "no",
        "guardian_also": "yes" if basis == "guardian_also" else "no",
        # The digest of a synthetic form, derived (not drawn) so the other
        # columns keep the bytes they had before the column was added.
        "consent_form_sha256": hashlib.sha256(
            f"synthetic consent form {seq} {birth} {consented_at}".encode()
        ).hexdigest(),
    }


def render(seed: int = SEED, count: int = COUNT) -> bytes:
    """The CSV bytes for ``count`` records generated from ``seed``."""
    # A seeded PRNG on purpose: the sample must be reproducible, and nothing
    # here is secret.
    rng = random.Random(seed)  # noqa: S311
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS + CONSENT, lineterminator="\n")
    writer.writeheader()
    for _ in range(count):
        writer.writerow(_record(rng))
    return buffer.getvalue().encode("utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    data = render()
    if args.check:
        if args.out.read_bytes() != data:
            print(f"{args.out} differs from the generator output", file=sys.stderr)
            return 1
        return 0
    args.out.write_bytes(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
