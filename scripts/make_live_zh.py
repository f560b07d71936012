"""Write conf/data/live_zh.jsonl: Chinese live-stream prompts in the source's shape (seed 000 §2.2), offline
and deterministic (the same file on every run; no model, no network).

    python scripts/make_live_zh.py [OUT]        # default conf/data/live_zh.jsonl

One row per prompt:
    id             zh-0001 ... (rows shuffled once, so that the first N mix categories and kinds)
    product_info   one product (商品名, 商家名, 主类别, 次级类别, 产品信息, 链接号, 原价, 折扣优惠, 是否包邮), or
                   several: {"商品1": {...}, "商品2": {...}} (a viewer who names no link number)
    history        earlier turns, roles 观众 (viewer) / 主播 (host): map them with prompts.roles
    question       the viewer's comment (弹幕)
    category       the first product's 主类别 (for pairs.balance, the report's shares)
    question_kind  answerable | partial | unanswerable | subsidy | digital_human | ordered | follow_up
    answerable     yes (the info answers it) | no (only customer service can) | "" (partial, or not a
                   product question: subsidy -> the product page, digital human, thanks for an order,
                   a follow-up that leans on the history)
    multi_turn     true when the history is not empty

The mix: every product gets each kind of question, alone and after one or two earlier exchanges, and some
prompts hold two products of a category; several categories (beauty, food, appliances, clothing, baby, digital).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "conf" / "data" / "live_zh.jsonl"

# name, merchant, category, subcategory, attributes, link, price, coupons [(name, price)], shipping,
# answerable questions, partial questions (one part answerable), unanswerable questions (customer service)
PRODUCTS = [
    ("润颜玻尿酸补水面霜50g", "A品牌", "美妆护肤", "面霜", {"净含量": "50g", "适用肤质": "干性及混合性肌肤", "功效": "补水保湿", "保质期": "3年"},
     3, 199.0, [("直播间专享券", 159.0)], "包邮",
     ["这个面霜多少克", "干皮能用吗", "现在买多少钱", "包邮吗"], ["多少克的，孕妇能用吗"], ["用完会过敏吗", "多久能美白"]),
    ("水润保湿喷雾150ml", "A品牌", "美妆护肤", "爽肤水/化妆水", {"净含量": "150ml", "功效": "补水", "适用人群": "通用"},
     4, 89.0, [("满减", 69.0)], "包邮",
     ["喷雾多少毫升", "有优惠吗"], ["能补水吗，能定妆吗"], ["能带上飞机吗"]),
    ("有机山茶油压榨食用油5L", "B品牌", "食品保健", "食用油", {"规格": "5L", "工艺": "物理压榨", "产地": "江西", "保质期": "18个月"},
     7, 268.0, [("第二件半价", 201.0)], "包邮",
     ["这个油是压榨的吗", "一桶几升", "产地是哪里"], ["几升的，适合宝宝吃吗"], ["能生吃吗", "开封后能放多久"]),
    ("PQQ复合营养片60片", "C品牌", "食品保健", "膳食营养补充食品", {"产品剂型": "片剂", "用法": "每天1次，每次2片", "适用人群": "成年人", "有效期": "24个月以上"},
     11, 420.0, [("3瓶周期装", 1020.0)], "",
     ["一天吃几片", "小孩能吃吗", "保质期多久"], ["一天吃几次，吃多久见效"], ["吃了会失眠吗", "和降压药能一起吃吗"]),
    ("双开门风冷无霜冰箱468L", "D品牌", "家用电器", "冰箱", {"总容积": "468L", "制冷方式": "风冷无霜", "能效等级": "一级", "颜色": "星空灰"},
     15, 3299.0, [("以旧换新", 2999.0)], "包邮",
     ["冰箱多大容量", "是风冷的吗", "几级能效"], ["一级能效吗，送货上门安装吗"], ["厨房嵌入式放得下吗", "噪音大不大"]),
    ("智能变频空调1.5匹挂机", "D品牌", "家用电器", "空调", {"匹数": "1.5匹", "能效等级": "一级", "适用面积": "16-22平方米", "功能": "冷暖变频"},
     16, 2599.0, [("店铺券", 2399.0)], "包邮",
     ["适合多大房间", "能制热吗", "用券后多少钱"], ["几匹的，安装费多少"], ["安装要打孔吗", "多久能到货"]),
    ("纯棉圆领短袖T恤", "E品牌", "服饰内衣", "T恤", {"面料": "100%棉", "尺码": "S-3XL", "颜色": "白色、黑色、雾霾蓝", "版型": "宽松"},
     21, 99.0, [("两件立减", 79.0)], "包邮",
     ["有几个颜色", "是纯棉的吗", "最大什么码"], ["有黑色吗，会缩水吗"], ["一米七一百六十斤穿什么码", "洗了掉色吗"]),
    ("轻薄羽绒服女款", "E品牌", "服饰内衣", "羽绒服", {"填充物": "90%白鸭绒", "充绒量": "120g", "尺码": "S-XL", "颜色": "米白、黑色"},
     22, 499.0, [("直播间券", 399.0)], "包邮",
     ["充绒量多少", "是鸭绒还是鹅绒", "有什么颜色"], ["有黑色吗，零下十度够暖吗"], ["会钻绒吗"]),
    ("婴儿纸尿裤L码54片", "F品牌", "母婴用品", "纸尿裤", {"尺码": "L码（9-14kg）", "片数": "54片", "特点": "轻薄透气"},
     31, 129.0, [("买二送一", 86.0)], "包邮",
     ["L码适合多重的宝宝", "一包几片"], ["一包几片，会不会红屁屁"], ["和别的牌子比哪个好"]),
    ("儿童保温杯316不锈钢", "F品牌", "母婴用品", "水杯", {"材质": "316不锈钢内胆", "容量": "400ml", "保温": "6小时", "颜色": "粉色、蓝色"},
     32, 79.0, [("第二件0元", 39.5)], "",
     ["保温多久", "杯子多大容量", "包邮吗"], ["有蓝色吗，能装牛奶吗"], ["能放洗碗机吗"]),
    ("降噪蓝牙耳机", "G品牌", "数码电子", "耳机", {"蓝牙版本": "5.3", "续航": "单次8小时，配合充电盒30小时", "降噪": "主动降噪", "接口": "Type-C"},
     84, 399.0, [("直播价", 299.0)], "包邮",
     ["续航多久", "是什么接口", "蓝牙几点几"], ["能降噪吗，苹果手机能连吗"], ["打游戏延迟高吗", "防水吗"]),
    ("多功能Type-C拓展坞", "G品牌", "数码电子", "拓展坞", {"接口": "HDMI、USB3.0×3、Type-C PD、SD卡槽", "材质": "铝合金"},
     59, 159.0, [("满减", 139.0)], "包邮",
     ["有几个USB口", "能插SD卡吗"], ["有HDMI吗，能接两个显示器吗"], ["我的旧笔记本能用吗"]),
]

SUBSIDY = ["国补后多少钱", "能用国补吗", "有政府补贴吗，补完多少"]
DIGITAL_HUMAN = ["主播你是真人吗", "你是机器人吧", "主播是AI吗"]
ORDERED = ["已经拍了", "下单了，什么时候发货", "刚买了两件"]
GREETINGS = ["主播好", "来了来了", "晚上好"]
HOST_OPENINGS = ["欢迎家人，今天的宝贝都是直播间专享价哦", "欢迎亲，喜欢的可以点链接看看哈", "宝宝晚上好，有问题随时问哦"]
FOLLOW_UPS = ["那这个呢", "刚才说的那个还有吗", "第二个呢"]


def product(p: tuple) -> dict:
    name, merchant, cat, sub, attrs, link, price, coupons, shipping = p[:9]
    return {
        "商品名": name, "商家名": merchant, "主类别": cat, "次级类别": sub,
        "产品信息": "；".join(f"{k}：{v}" for k, v in attrs.items()), "链接号": link, "原价": price,
        "折扣优惠": "；".join(f"{n}：{v:g}元" for n, v in coupons), "是否包邮": shipping or "未说明",
    }  # fmt: skip


def history(rng: random.Random, p: tuple, turns: int) -> list[dict]:
    """0, 1 or 2 earlier exchanges: a greeting, then an answerable question about the same product."""
    out: list[dict] = []
    if turns >= 1:
        out += [{"role": "观众", "content": rng.choice(GREETINGS)}, {"role": "主播", "content": rng.choice(HOST_OPENINGS)}]
    if turns >= 2:
        asked = rng.choice(p[9])
        out += [{"role": "观众", "content": asked}, {"role": "主播", "content": f"家人，{p[0]}在{p[5]}号链接，具体可以看商品信息哦"}]
    return out


def rows() -> list[dict]:
    rng = random.Random(25)
    out: list[dict] = []

    def add(products: list[tuple], turns: int, question: str, kind: str, answerable: str) -> None:
        info = product(products[0]) if len(products) == 1 else {f"商品{i + 1}": product(p) for i, p in enumerate(products)}
        hist = history(rng, products[0], turns)
        out.append({
            "id": "", "product_info": info, "history": hist, "question": question,
            "category": products[0][2], "question_kind": kind, "answerable": answerable, "multi_turn": bool(hist),
        })  # fmt: skip

    for p in PRODUCTS:
        for turns in (0, 1, 2):
            for q in p[9]:
                add([p], turns, q, "answerable", "yes")
            for q in p[10]:
                add([p], turns, q, "partial", "")
            for q in p[11]:
                add([p], turns, q, "unanswerable", "no")
            if p[2] in ("家用电器", "数码电子"):
                add([p], turns, rng.choice(SUBSIDY), "subsidy", "")
            add([p], turns, rng.choice(DIGITAL_HUMAN), "digital_human", "")
            add([p], turns, rng.choice(ORDERED), "ordered", "")
        if rng.random() < 0.5:  # the viewer refers back to what was said
            add([p], 2, rng.choice(FOLLOW_UPS), "follow_up", "")
    by_category: dict[str, list[tuple]] = {}
    for p in PRODUCTS:
        by_category.setdefault(p[2], []).append(p)
    for group in by_category.values():  # two products at once: the viewer names no link number
        a, b = group
        for turns in (0, 2):
            add([a, b], turns, f"{a[5]}号和{b[5]}号有什么区别", "answerable", "yes")
            add([a, b], turns, "哪个更便宜", "answerable", "yes")
            add([a, b], turns, "这两个哪个质量好", "unanswerable", "no")
    rng.shuffle(out)  # the first N prompts (prompts.limit) mix categories and kinds
    for number, row in enumerate(out, 1):
        row["id"] = f"zh-{number:04d}"
    return out


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else OUT
    data = rows()
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data), encoding="utf-8")
    kinds: dict[str, int] = {}
    for r in data:
        kinds[r["question_kind"]] = kinds.get(r["question_kind"], 0) + 1
    multi = sum(r["multi_turn"] for r in data)
    print(f"{path}: {len(data)} prompts, {multi} multi-turn, {len({r['category'] for r in data})} categories, {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
