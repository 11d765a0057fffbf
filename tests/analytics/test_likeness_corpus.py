"""A labelled set of complaints for template-complaint detection, and checks that it is honest.

Two kinds of filings, on the same topics (credit cards, small loans, insurance, wealth
products, investment advice, prepaid cards), in the words people use when they complain:

- *template* filings: a black-market agent hands many consumers one prepared text; each fills in
  their own name, firm, amounts, dates and numbers, moves sentences around, changes a few words
  or adds a sentence of their own: 5-15% of the characters differ from the agent's copy
  (measured here, sentence moves aside). Filings from one template are "alike".
- *independent* filings: each consumer tells their own story, built from a shared bank of what
  people with this problem say (the same products, fees, firms, complaints and requests, with
  the phrasing varied), so that two independent complaints on one topic share much of their
  vocabulary and sometimes a stock phrase, as real ones do. No two of them are "alike".

``corpus(seed)`` builds the set; the tests below check the edit shares and that independent
complaints on one topic share vocabulary. The detector's precision and recall on this set are
measured in ``test_likeness.py``; ``bench/oversight.py`` uses the generator for its filings.
"""

from __future__ import annotations

import difflib
import itertools
import random
import re
import statistics
from dataclasses import dataclass
from typing import cast

from portal.analytics.shingles import shingles

# -- shared details ---------------------------------------------------------------------------

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶程"
)
GIVEN = [
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛",
    "明", "超", "秀英", "霞", "平", "刚", "桂英", "建华", "玉兰", "志强", "海燕", "晓东", "红梅",
]  # fmt: skip
CITIES = [
    "上海", "杭州", "南京", "苏州", "合肥", "武汉", "长沙", "成都", "重庆", "郑州", "济南",
    "青岛", "泉州", "厦门", "福州", "南昌", "昆明", "贵阳", "西安", "太原",
]  # fmt: skip
FIRMS = {
    "credit_card": [
        "招商银行信用卡中心", "中信银行信用卡中心", "广发银行信用卡中心", "平安银行信用卡中心",
        "浦发银行信用卡中心", "交通银行太平洋信用卡中心", "兴业银行信用卡中心",
        "民生银行信用卡中心",
    ],
    "small_loan": [
        "安逸花消费金融有限公司", "鑫源小额贷款有限公司", "众诚网络小额贷款有限公司",
        "恒丰消费金融有限公司", "瑞达小额贷款有限公司", "安泰融资担保有限公司",
    ],
    "insurance": [
        "泰康人寿保险股份有限公司", "平安人寿保险股份有限公司", "新华人寿保险股份有限公司",
        "国泰人寿保险股份有限公司", "华信财产保险股份有限公司", "永安人寿保险股份有限公司",
    ],
    "bank_wealth": [
        "工商银行", "建设银行", "农业银行", "中国银行", "恒丰银行", "华夏银行", "浙商银行",
    ],
    "securities_advisory": [
        "金盛证券投资咨询有限公司", "君安投资顾问有限公司", "博远证券投资咨询有限公司",
        "昌隆投资顾问有限公司", "明德证券投资咨询有限公司",
    ],
    "consumer": [
        "星光健身管理有限公司", "锦程教育培训有限公司", "嘉禾美容美发有限公司",
        "乐享健身俱乐部", "优学英语培训中心",
    ],
}  # fmt: skip
PRODUCTS = {
    "credit_card": ["账单分期", "现金分期", "自动分期", "信用卡", "白金卡", "联名卡"],
    "small_loan": ["消费贷款", "现金贷", "随借随还贷款", "分期借款", "网络小额贷款"],
    "insurance": ["分红型两全保险", "年金险", "重大疾病保险", "万能险", "增额终身寿险"],
    "bank_wealth": ["理财产品", "结构性存款", "私募基金", "净值型理财", "信托计划"],
    "securities_advisory": ["荐股会员服务", "投资顾问服务", "炒股软件", "策略服务", "股票培训课程"],
    "consumer": ["健身年卡", "私教课程", "英语课程", "美容护理套餐", "预付储值卡"],
}  # fmt: skip
TOPICS = list(FIRMS)

# -- independent complaints: what people with each problem say, phrasing varied ---------------
# "[a|b]" is a choice of wording; "{slot}" a detail of this complaint.

OPENINGS = {
    "credit_card": [
        "我[于|在]{date}[申请|办理]了{firm}的[一张|]信用卡，卡号尾号{tail}。",
        "[本人|我]持有{firm}的信用卡[好几年|多年|五六年]了，[以前|之前|一直以来][都|]按时还款[，没有逾期过|]。",
        "{date}，{firm}的[客服|工作人员][打电话|来电]给我，说[可以|能][给我|帮我][提额|提高额度]，[让|要]我[办理|开通]{product}。",
        "{date}我在{city}[的商场|逛街的时候|的地铁站]被{firm}的[推广人员|地推人员|业务员][拉住|拦住]办了一张[信用卡|卡]。",
        "[去年|前年]{month}月[我|本人]用{firm}的[信用卡|卡][消费|刷]了{amount}元，[当时|那时][选了|办了]{product}。",
        "我是{city}[人|的一名普通工人|的个体户]，{date}在{firm}[办理|办]了{product}，[金额|本金][是|共]{amount}元。",
        "[我的|本人的]{firm}信用卡[是|于]{date}[开的|办的|开卡的]，[额度|授信额度]{amount}元。",
    ],
    "small_loan": [
        "{date}我[在手机上|用手机][通过|在]{firm}的[应用|APP|小程序]借了{amount}元，[分|约定分]{n}期[还|还款]。",
        "[因为|由于][家里急用钱|资金周转困难|孩子看病急需用钱]，{date}我[向|在]{firm}申请了{product}。",
        "我在{city}[打工|上班|做小生意]，{date}在[网上|抖音上|朋友圈]看到{firm}的广告，[申请|借]了一笔{product}。",
        "[本人|我][于|在]{date}[在|通过]{firm}[办理|申请]{product}，[合同|借款]金额{amount}元。",
        "{date}，{firm}的[业务员|客户经理][加我微信|打电话给我][推荐|介绍]{product}，说[利息很低|利率很优惠|当天就能放款]。",
        "我[之前|前几年]在{firm}[借过|办过]{product}，{date}又[借了|续借了]{amount}元。",
    ],
    "insurance": [
        "{date}，{firm}的[业务员|代理人|保险销售][到我家里|上门|在小区里]给我推荐了[一款|一份]{product}。",
        "[本人|我][于|在]{date}[通过|在]银行[柜台|网点]购买了{firm}的{product}，每年[交|缴]保费{amount}元。",
        "我[母亲|父亲|婆婆]今年[七十多岁|快八十岁|六十多岁]，{date}被{firm}的[业务员|销售人员]说服[买了|投保了]{product}。",
        "{date}我在{city}的银行[存钱|办理存款|取钱]时，[工作人员|柜员|大堂经理]给我推荐了{firm}的{product}。",
        "[我|本人]在{firm}[投保了|买了]{product}，[已经|前后]交了{n}年[保费|的钱]。",
        "[我|本人]的{product}是{date}在{firm}[买的|投保的]，[保额|保费]{amount}元。",
    ],
    "bank_wealth": [
        "{date}，我到{firm}{city}[分行|支行|网点][存钱|办业务|转定期]，理财经理[向我|给我]推荐了一款{product}。",
        "[本人|我]是退休[职工|教师|工人]，{date}在{firm}[购买|买]了{product}{amount}元。",
        "{date}我在{firm}的[网点|营业厅|手机银行上][买了|购买了]{product}，期限{n}个月。",
        "[去年|前年]{month}月，{firm}的[客户经理|理财经理][多次|反复|好几次]打电话[让我|劝我][买|购买]{product}。",
        "我[一直|多年来]在{firm}存[定期|钱]，{date}[客户经理|柜台人员][建议我|劝我]把存款[转成|换成]{product}。",
    ],
    "securities_advisory": [
        "{date}，[一个陌生人|一位自称老师的人|一个网友]把我拉进了一个[炒股|股票交流][微信群|群|QQ群]，后来{firm}的[业务员|客服|助理]联系[了|]我。",
        "我是[股民|散户|一名普通投资者]，{date}接到{firm}的[电话|回访电话]，[推荐|劝]我[购买|办理|开通]{product}。",
        "{date}我在[网上|短视频平台|直播间]看到{firm}的[直播|广告|讲课]，[随后|之后|后来][交|付]了{amount}元[开通|购买]{product}。",
        "[本人|我][于|在]{date}与{firm}签订了{product}[合同|协议]，[服务费|费用]{amount}元。",
        "[炒股|做股票][好几年|多年]一直亏钱，{date}{firm}的[人|业务员]说能帮我[回本|把亏的赚回来]。",
    ],
    "consumer": [
        "{date}我在{city}的{firm}[办了|办理了]一张{product}，[花了|交了|充了]{amount}元。",
        "{date}，{firm}的[销售人员|店员|工作人员][在街上发传单|在商场门口|打电话][推荐|劝]我办理{product}。",
        "[本人|我][于|在]{date}为[孩子|女儿|儿子]在{firm}报名了{product}，一次性[交费|付了]{amount}元。",
        "我在{firm}[充值|储值|预存]了{amount}元，[购买|办理]了{product}。",
        "[我和|我跟][朋友|同事]{date}一起在{firm}[办了|买了]{product}，[每人|我]交了{amount}元。",
    ],
}  # fmt: skip
PROBLEMS = {
    "credit_card": [
        "[客服|业务员][只说|只告诉我][每期|每个月的]手续费[很低|不高|才零点几]，[从来没|根本没|没有][提过|说过][折算成|换算成]年化利率有多高。",
        "[后来|之后][我|本人][自己|上网][算了一下|查了一下]，实际年化利率[接近|差不多|将近]{rate}%，[远远|明显|大大]超过了[宣传的水平|当时说的]。",
        "我[从来|根本][没有|没][同意过|申请过][开通|办理]{product}，[但|可是]账单上[却|]出现了[手续费|分期手续费]{fee}元。",
        "我想[提前|一次性][还清|结清][剩下的|剩余的]分期，[银行|对方][却|竟然][要求|让]我把[剩余期数的|剩下几期的]手续费[一次性|全部][付完|交齐]。",
        "[因为|由于][收入下降|工作不稳定|生意不好]，我有[两期|几期|一个月]没能按时还款，[银行|对方]就收了{fee}元[违约金|滞纳金]和[高额|很高的|不少]利息。",
        "[银行|对方]在没有[通知|告知][我|本人]的情况下[扣了|收了]{fee}元年费，办卡的时候[业务员|工作人员][明确|亲口][说|讲][终身免年费|免年费|刷够次数就免年费]。",
        "我的卡在{date}被人在[外地|境外|{city}][盗刷|刷走]了{amount}元，[当时|那时]卡[就在我身上|一直在我手里]。",
        "账单上[有|多了]一笔{fee}元的[账户安全险|安全保障费|会员服务费]，我[根本|完全][不知道|不清楚][是什么时候|什么时候]开通的。",
        "[催收人员|催收公司][每天|天天|一天好几次][打电话|打我电话]，还[打给|联系]我的[同事和家人|父母|朋友]。",
        "我的[额度|信用额度]被[突然|无缘无故][降低|降到了几千元]，[导致|结果][还款|资金周转]出现了困难。",
        "[分期的|分期]手续费是[按照|按]全部本金[计算|收]的，[已经还了的|还掉的]本金也[在|照样]收手续费。",
        "[我|本人][去银行|打电话]要求[查看|调取]分期[合同|协议]，[对方|他们]说[只有电子版|系统里没有]。",
    ],
    "small_loan": [
        "[到手|实际到账|真正拿到手]的钱[只有|才]{amount}元，[其余的|剩下的|差额][被扣成了|被当作|都算成了][服务费|会员费|手续费]。",
        "[借款时|申请的时候][页面|系统|APP][默认勾选了|自动给我开了]{fee}元的[会员服务|加速审核服务|会员]，不[开通|买]就[不能|不给]放款。",
        "[我|本人][算了一下|仔细算过]，加上各种[费用|服务费]，[综合年化成本|实际利率][超过了|高达]{rate}%。",
        "逾期[几天|没几天|才三天][后|以后]，催收人员就[打爆|打遍]了我的通讯录，[连我的领导|我的同学和亲戚][都接到了电话|都被骚扰了]。",
        "催收人员在电话里[辱骂|威胁|恐吓]我，[说要|扬言要][上门|去我单位|去我老家][找我|闹]。",
        "我想提前[还款|还清]，对方却[要我|要求我][支付|交]{fee}元的[违约金|提前还款手续费]。",
        "合同里的[利率|利息|费用]和[业务员|客服]说的[完全|根本]不一样。",
        "[平台|对方][还|又][给我|强行]搭售了一份{fee}元的[保险|意外险]，我[并不知情|事先不知道]。",
        "我每期都[按时|准时]还款，[但是|可是]系统[显示|说]我逾期了，[还收了|扣了]罚息。",
        "对方的[担保费|保证金]和[咨询费|服务费][加起来|合计][比利息还高|快赶上本金了]。",
        "[还款|扣款]的时候[系统|平台][多扣|重复扣]了我{fee}元，[客服|对方]说要[核实|等几天]。",
    ],
    "insurance": [
        "[业务员|销售人员][说|告诉我]这个产品[和存款一样|跟定期存款差不多]，[随时|想用钱的时候][可以|都能][取出来|拿出来]，还有分红。",
        "投保时[业务员|代理人][没有|没][向我|跟我][说明|解释][免责条款|哪些情况不赔]，也[没有|没][让我本人|让我自己]签字。",
        "我{date}[生病住院|住院手术|做了手术]，花了{amount}元，[申请理赔时|去理赔的时候]保险公司[以|说我有]既往病史[为由|，][拒赔|不给赔]。",
        "我想退保，[却被告知|保险公司说][只能|只][退还|退]{fee}元的现金价值。",
        "[续期|第二年的|后面几年的]保费在没有[通知|告诉]我的情况下就被[扣了|划走了]。",
        "[业务员|销售][承诺|说][的收益率|每年收益]是{rate}%，[实际|结果]分红[少得可怜|只有一点点|几乎没有]。",
        "投保单上的签名[不是我签的|是别人代签的]，[我|本人][当时|那天][根本不在场|不在家]。",
        "保险公司要求我[提供|补交]各种材料，[拖了|前后拖了][几个月|半年|快一年]也没有[结果|答复]。",
        "[业务员|那个代理人]已经离职了，[公司|保险公司]说[业务员的承诺不算数|那是个人行为]。",
        "我[一直以为|当时以为]自己买的是[理财|存款]，[后来|到期时][才知道|才发现]是[保险|长期寿险]。",
    ],
    "bank_wealth": [
        "理财经理[当时|反复|一再][说|强调]这个产品[保本保息|不会亏本|很稳]，年化收益能[到|达到]{rate}%。",
        "风险评估[问卷|测评]是[工作人员|理财经理][代填|帮我填|替我勾]的，我[根本没看过|一个字都没看]。",
        "产品到期后我[不但|不仅][没有收益|没赚到钱]，本金还[亏了|少了]{amount}元。",
        "我后来才[知道|发现][买的|购买的]是[银行代销的|别的公司的]私募基金，[根本|并]不是银行[自己的|自营的]理财。",
        "我[多次|几次|好几回][申请赎回|要求取出来]，对方都以[各种理由|系统原因|市场波动][拖延|推脱]。",
        "购买时[没有|没][录音录像|双录]，也[没有|没][告诉我|说明]产品的风险等级。",
        "理财经理[说|保证]如果亏了可以找他，现在他[不接电话|电话打不通|已经调走了]。",
        "我的风险承受能力是[保守型|谨慎型]，银行却[卖给我|推荐我买][高风险产品|R4级的产品]。",
        "[银行|网点][只给了我|给我的][一张收据|一份确认单]，[合同|产品说明书][一直|从来]没有给我。",
    ],
    "securities_advisory": [
        "[业务员|对方][说|保证][跟着|跟]老师操作[一个月|很快|两周][就能|肯定能]回本，[保证|承诺]收益{rate}%以上。",
        "交钱以后[推荐的|老师荐的]股票[连续|接连|几乎天天][跌停|下跌]，[亏损|亏了][超过了|将近]{amount}元。",
        "对方又以[内幕消息|有庄家消息|名额有限][为由|做借口]，让我[升级|加钱开通][更高级的|VIP]服务，又交了{fee}元。",
        "所谓的[投资顾问|老师指导][其实|实际上][就是|只是]在群里发[股票代码|荐股信息]，[根本没有|没有任何][分析|依据]。",
        "开通服务前对方[没有|没][给我做|让我做]风险测评，也[没有|没][出示|提供|说明][资质|经营许可]。",
        "我要求退费，对方[说|称][合同里写了|合同约定|签了协议][不能退|概不退款]。",
        "[后来|最后][老师|客服|业务员]把我拉黑了，[群也解散了|群也找不到了]。",
        "[对方|业务员][让我|教我]把钱[转到|打到]一个个人账户，[说是|称是]为了[走账|方便操作]。",
        "[他们|对方]给我的软件[每个月|每年]还要[续费|交钱]，[说不续费|不交]就[看不到|收不到]信号。",
        "我把[养老钱|全部积蓄|准备买房的钱]都[投进去了|亏进去了]，[家里人|老伴]还不知道。",
    ],
    "consumer": [
        "[去了|上了|用了][没几次|不到两个月]，{firm}就[突然|无故|一夜之间]关门了，[门上|店门口]贴了[停业通知|装修通知]。",
        "[销售人员|店员|老板][说|承诺][可以|能][随时|无理由]退，现在要退卡却要[扣|收]{fee}元[违约金|手续费]。",
        "[合同|协议]是对方的格式合同，[很多|不少]条款都对消费者不公平。",
        "[老板|店长]换了以后，新老板不[承认|认][之前的|原来的]会员卡。",
        "课程[质量|老师|内容]和[宣传的|当时说的][完全|根本]不一样，孩子[根本学不到东西|没什么进步]。",
        "对方[让我|给我][办了|开通了][分期|贷款]付款，我到后来才知道[要付利息|背上了贷款]。",
        "[店里|门店]的电话一直[没人接|打不通]，微信也不回。",
        "[我们|会员们]建了一个[群|维权群]，[发现|才知道][受骗的|被坑的]有[几十个人|一百多人]。",
        "[退费|退款]申请交上去[以后|后][一直|已经][没有回音|拖了好几个月]。",
    ],
}  # fmt: skip
INTERACTIONS = [
    "我[多次|好几次|不下十次][拨打|打]{firm}的客服[热线|电话]，客服只是让我[等待回复|等通知|耐心等待]，一直没有[结果|下文]。",
    "我到[营业网点|门店|他们公司]去[问|找]，工作人员说[这个事情|这事][他们管不了|不归他们管]。",
    "对方只同意[退还|减免|退]一[部分|小部分]，我[不能接受|觉得不合理]。",
    "我向对方要[合同|协议]和[录音|通话记录]，他们以[内部资料|公司规定][为由|做借口][拒绝提供|不给]。",
    "我也向[当地|{city}的]监管部门[反映过|打过电话]，[对方|他们]建议[先找调解组织调解|我申请调解]。",
    "我在[网上|黑猫投诉上|12315]投诉过，对方打来电话[说会处理|敷衍了几句]，后来就[没有下文了|不了了之了]。",
    "客服[态度很差|态度恶劣|很不耐烦]，还说我[自己签了合同|签了字]就要[认|承担|自己负责]。",
    "[我和家人|我][去找过|去问过|上门找过]几次，每次都[让我们|叫我们]回去等消息。",
]  # fmt: skip
IMPACTS = [
    "这件事[让我|搞得我][压力很大|心力交瘁]，[晚上|夜里]经常睡不着[觉|]。",
    "现在[我的|]征信上有了逾期记录，[影响到|影响了]我[申请房贷|贷款买房|找工作]。",
    "我家里还有[老人和孩子|父母和孩子]要[照顾|养]，实在[拿不出|凑不出]这么多钱。",
    "我是[退休人员|退休老人|普通工人]，对[金融产品|这些东西][并不了解|一窍不通]，完全是[相信了对方|信了他们的话]。",
    "这笔钱是我[多年的积蓄|准备给孩子上学用的|看病的钱]，现在[全没了|要不回来了]。",
    "我[已经|]保留了[聊天记录|通话录音|微信记录]和[转账记录|付款凭证]，可以提供。",
    "我的家人也[因此|跟着][受到了骚扰|着急上火]。",
]  # fmt: skip
DEMANDS = {
    "credit_card": [
        "[我要求|现要求|希望]银行退还[多收的|不合理的]手续费{fee}元。",
        "希望银行[停息挂账|停止计息]，[让我|同意我]分{n}期还清本金。",
        "请求银行[撤销|免除]违约金和罚息，并[消除|修复|更正]征信上的逾期记录。",
        "要求银行[赔偿|退还]被盗刷的{amount}元。",
        "[请求|希望][调解委员会|调解员]帮忙协调，[减免|免掉]利息和手续费。",
    ],
    "small_loan": [
        "要求[平台|对方]退还会员费和服务费[共|一共|合计]{fee}元。",
        "请求对方按照[法定利率|法律规定的利率]重新计算，退还多收的利息。",
        "要求对方停止[暴力催收|骚扰我的家人和同事]，并[赔礼道歉|向我道歉]。",
        "希望[调解委员会|调解员]帮我[协商|商量]一个[还款方案|分期方案]，分{n}期还本金。",
    ],
    "insurance": [
        "要求保险公司[全额|全部]退还已交的保费{amount}元。",
        "请求保险公司按照合同[理赔|赔付]{amount}元。",
        "希望[解除|撤销]保险合同，[退还|返还]全部保费。",
        "要求保险公司[承担|赔偿]我的损失并[追究|处理]业务员的责任。",
    ],
    "bank_wealth": [
        "要求银行赔偿[我的|本金]损失{amount}元。",
        "请求银行[承担|赔偿][未尽到|没有尽到]适当性义务造成的损失。",
        "希望银行尽快[办理赎回|让我赎回]，[退还|返还]本金。",
    ],
    "securities_advisory": [
        "要求对方[全额|全部]退还服务费{amount}元。",
        "请求对方退还[会员费|服务费][并|，同时]赔偿[亏损|我的损失]。",
        "希望[调解委员会|调解员][协调|帮忙让]对方[退费|退款]。",
    ],
    "consumer": [
        "要求[商家|对方|店家]退还[剩余的|卡里剩下的][卡内余额|钱]{amount}元。",
        "请求解除合同，退还[未上的课时费|剩余费用|没用完的钱]。",
        "希望[调解委员会|调解员]帮我[要回|追回]{fee}元。",
    ],
}  # fmt: skip
# How people join their sentences: a connective now and then.
CONNECTIVES = ["", "", "", "后来", "而且", "结果", "没想到", "更过分的是", "另外", "其实", "当时"]

# -- templates: prepared texts of black-market "rights-protection" agents ----------------------
# One list of sentences per template; the agent's copy is filled with its own sample details.

TEMPLATES: dict[str, list[list[str]]] = {
    "credit_card": [
        [
            "本人{name}，系{firm}信用卡持卡人，卡号尾号{tail}。",
            "自{date}起，本人因经营失败、收入骤减，无力按原约定偿还信用卡欠款，截至目前欠款本金约{amount}元。",
            "{firm}在本人逾期后，收取了大量违约金、超限费、复利及分期手续费，综合年化利率已远超国家规定的上限。",
            "同时，贵行委托的第三方催收机构多次以爆通讯录、恐吓等方式暴力催收，给本人及家人造成了极大的精神伤害。",
            "根据《消费者权益保护法》第十条之规定，本人依法享有公平交易的权利。",
            "现本人诚恳请求：停止一切催收行为，减免全部违约金、利息及手续费，同意本人将剩余本金分{n}期按月偿还。",
            "如贵行不予处理，本人将向金融监管部门及人民银行征信管理部门进一步投诉。",
        ],
        [
            "投诉人{name}，于{date}在{firm}办理信用卡分期业务，分期金额{amount}元，共{n}期。",
            "办理时，贵行工作人员仅告知每期手续费率，刻意隐瞒了分期业务的实际年化利率。",
            "经本人核算，该笔分期的实际年化利率高达{rate}%，远高于贵行宣传的费率水平。",
            "贵行的行为违反了监管部门关于信用卡分期业务须明确展示年化利率的规定，侵犯了消费者的知情权。",
            "本人多次致电贵行客服要求说明，均未得到合理答复。",
            "现要求贵行退还全部分期手续费{fee}元，并对本人作出书面道歉。",
        ],
        [
            "本人{name}，持有{firm}信用卡一张，卡号末四位{tail}。",
            "{date}，本人发现信用卡账单中被扣除年费及账户安全服务费共计{fee}元。",
            "本人从未申请开通上述收费服务，贵行亦未以任何方式告知本人或取得本人同意。",
            "贵行擅自开通收费项目并扣款，违反了公平交易原则，损害了本人的合法权益。",
            "本人已多次通过客服热线提出异议，贵行以系统自动扣费为由拒绝退还。",
            "现特向调解委员会申请调解，要求贵行全额退还擅自扣收的费用{fee}元，并取消相关收费服务。",
        ],
    ],
    "small_loan": [
        [
            "申请人{name}于{date}通过{firm}平台借款{amount}元，借款期限{n}个月。",
            "借款过程中，平台以提高通过率为由，强制本人开通会员服务并扣除会员费{fee}元。",
            "上述会员费实为变相收取的砍头息，加上担保费、咨询费后，借款综合年化成本超过{rate}%。",
            "根据最高人民法院关于民间借贷的司法解释，超过法定保护上限的利息及费用不受法律保护。",
            "平台的行为违反了相关监管规定，严重损害了金融消费者的合法权益。",
            "现申请人要求：退还全部会员费及超出法定上限的利息和费用，并出具结清证明。",
        ],
        [
            "本人{name}，身份证号已提供，系{firm}借款人。",
            "因{date}本人突发疾病失去收入来源，暂时无法按期还款，并非恶意逃废债务。",
            "逾期后，平台及其委托的催收人员频繁拨打本人通讯录中亲友电话，发送侮辱性短信，严重影响本人的工作和生活。",
            "上述暴力催收行为违反了《个人信息保护法》及互联网贷款催收的相关规定。",
            "本人愿意积极偿还借款本金{amount}元，但目前确无能力一次性还清。",
            "恳请调解委员会主持调解，要求平台停止暴力催收，减免罚息和违约金，同意本人分{n}期偿还本金。",
        ],
        [
            "投诉人{name}于{date}在{firm}申请{product}，合同约定借款金额{amount}元。",
            "实际到账金额仅为{fee}元，差额部分被平台以服务费名义预先扣除。",
            "平台在借款页面未明示综合年化利率，诱导本人签订了不公平的格式合同。",
            "平台事先扣除服务费的行为属于变相收取砍头息，违反了《民法典》第六百七十条的规定。",
            "现要求平台按实际到账金额计算本金，退还多收取的利息及服务费，并更正本人的征信记录。",
        ],
    ],
    "insurance": [
        [
            "投保人{name}于{date}在{firm}投保{product}，年交保费{amount}元。",
            "投保时，销售人员将保险产品宣传为高收益存款产品，承诺随时可以全额支取本金和利息。",
            "销售人员未向本人说明保险责任、退保损失及免责条款，投保单上的部分签名亦非本人所签。",
            "上述行为属于销售误导，违反了《保险法》第十七条关于保险人说明义务的规定。",
            "本人在得知真相后多次要求退保，保险公司仅同意按现金价值退还，本人损失巨大。",
            "现本人要求保险公司撤销保险合同，全额退还已交保费共计{fee}元。",
        ],
        [
            "申请人{name}系{firm}的被保险人，于{date}因病住院治疗，共花费医疗费用{amount}元。",
            "出院后申请人依约申请理赔，保险公司以申请人投保前存在既往病史、未如实告知为由拒绝赔付。",
            "投保时保险公司的业务员并未就相关病史进行询问，健康告知一栏系业务员代为勾选。",
            "依据《保险法》第十六条的规定，保险人未询问的事项，投保人不负告知义务。",
            "现申请人要求保险公司按照合同约定履行赔付责任，支付保险金{amount}元。",
        ],
    ],
    "bank_wealth": [
        [
            "本人{name}，{date}在{firm}{city}分行购买{product}，金额{amount}元。",
            "购买时，该行理财经理明确承诺该产品保本保息，年化收益率不低于{rate}%。",
            "理财经理未对本人进行真实的风险评估，风险测评问卷系其代为填写，且销售过程未进行录音录像。",
            "产品到期后，本人不仅未获得承诺收益，本金亦亏损{fee}元。",
            "该行的行为违反了《商业银行理财业务监督管理办法》规定的适当性义务。",
            "现本人要求该行赔偿全部本金损失及承诺收益，并对相关责任人员作出处理。",
        ],
        [
            "申请人{name}为退休人员，风险承受能力评级为保守型。",
            "{date}，{firm}客户经理向申请人推介一款{product}，称其为银行自营的稳健型理财产品。",
            "申请人后来得知，该产品实际为银行代销的高风险私募产品，与申请人的风险承受能力明显不匹配。",
            "银行作为金融产品的销售者，未履行适当性义务，应当对申请人的损失承担赔偿责任。",
            "截至目前，该产品已停止兑付，申请人本金{amount}元无法赎回。",
            "现申请人要求银行赔偿全部本金损失{amount}元及相应利息。",
        ],
    ],
    "securities_advisory": [
        [
            "本人{name}于{date}接到{firm}业务人员电话，对方称其老师有内幕消息，跟随操作可稳赚不赔。",
            "在对方诱导下，本人先后支付服务费共计{amount}元，开通其所谓的{product}。",
            "开通服务前，该公司未对本人进行风险测评，也未出示证券投资咨询业务资格。",
            "服务期间，对方推荐的股票连续下跌，本人账户亏损严重，对方又以升级服务为由要求本人继续缴费{fee}元。",
            "该公司以承诺收益的方式招揽客户，违反了《证券法》及证券投资顾问业务的相关规定。",
            "现本人要求该公司全额退还已缴纳的全部服务费，并赔偿本人的投资损失。",
        ],
        [
            "申请人{name}，{date}被拉入一个股票交流群，群内自称{firm}分析师的人员每日推荐股票。",
            "随后，该公司业务员以名额有限、收益翻倍为由，诱导申请人购买{product}，收费{amount}元。",
            "所谓投资顾问服务实际仅为群内发送股票代码，无任何专业分析，申请人按其建议操作后亏损{fee}元。",
            "申请人提出退费后，对方以合同约定不退为由拒绝，并将申请人移出群聊。",
            "现申请人要求该公司退还全部服务费{amount}元。",
        ],
    ],
    "consumer": [
        [
            "申请人{name}于{date}在{firm}办理{product}，一次性预付费用{amount}元。",
            "办理时，销售人员承诺服务期内可随时无理由退费，申请人方才签约付款。",
            "{date}起，该店突然停止营业，门店张贴停业通知，工作人员失联，申请人剩余费用无法使用。",
            "经营者收取预付款后不按约定提供服务，违反了《消费者权益保护法》第五十三条的规定。",
            "现申请人要求经营者退还剩余预付款{fee}元，并承担相应的违约责任。",
        ],
    ],
}  # fmt: skip

# Words a consumer changes in an agent's text (either way round).
SYNONYMS = [
    ("本人", "我"), ("贵行", "该行"), ("贵行", "你行"), ("现", "现在"), ("要求", "请求"),
    ("严重", "极大地"), ("多次", "多番"), ("共计", "合计"), ("上述", "以上"), ("均", "都"),
    ("申请人", "本人"), ("平台", "该平台"), ("该公司", "对方公司"), ("未", "没有"),
    ("诱导", "引诱"), ("全额", "全部"), ("亏损", "损失"), ("恳请", "请求"), ("依法", "依照法律"),
]  # fmt: skip
# Sentences a consumer adds to an agent's text, in their own words.
ASIDES = [
    "我家里还有两个孩子在上学。",
    "我现在每个月工资只有三千多元。",
    "请调解员帮帮我。",
    "我老伴身体也不好，需要长期吃药。",
    "这件事已经拖了好几个月了。",
    "我实在没有办法了才来申请调解。",
    "相关的聊天记录我都保存着。",
]


@dataclass(frozen=True)
class Filing:
    """One labelled complaint: ``family`` names its template, or is None when independent."""

    key: int
    topic: str
    text: str
    family: str | None = None
    edit_share: float = 0.0  # template filings: the share of characters changed


@dataclass(frozen=True)
class Corpus:
    filings: list[Filing]

    def pairs(self) -> set[tuple[int, int]]:
        """The alike pairs (a < b): filings of one template."""
        families: dict[str, list[int]] = {}
        for f in self.filings:
            if f.family is not None:
                families.setdefault(f.family, []).append(f.key)
        return {
            (min(a, b), max(a, b))
            for keys in families.values()
            for a, b in itertools.combinations(keys, 2)
        }


_CHOICE = re.compile(r"\[([^\[\]]*)\]")


def _details(rng: random.Random, topic: str) -> dict[str, str]:
    year = rng.choice([2023, 2024, 2025])
    month = rng.randint(1, 12)
    amount = rng.choice(
        [rng.randint(3, 99) * 1000, rng.randint(1000, 80000), rng.randint(10, 500) * 100]
    )
    return {
        "name": rng.choice(SURNAMES) + rng.choice(GIVEN),
        "firm": rng.choice(FIRMS[topic]),
        "product": rng.choice(PRODUCTS[topic]),
        "city": rng.choice(CITIES),
        "date": f"{year}年{month}月{rng.randint(1, 28)}日",
        "month": str(month),
        "amount": str(amount),
        "fee": str(rng.choice([rng.randint(50, 3000), rng.randint(1, 60) * 100])),
        "tail": f"{rng.randint(0, 9999):04d}",
        "n": str(rng.choice([6, 12, 18, 24, 36, 48, 60])),
        "rate": str(rng.choice([18, 20, 24, 28, 30, 36, 4, 5, 6, 8])),
    }


def _say(rng: random.Random, phrase: str, details: dict[str, str]) -> str:
    return _CHOICE.sub(lambda m: rng.choice(m.group(1).split("|")), phrase).format(**details)


def independent(rng: random.Random, topic: str) -> str:
    """A complaint in the consumer's own words: the topic's stock of facts and phrases."""
    d = _details(rng, topic)
    parts = [_say(rng, rng.choice(OPENINGS[topic]), d)]
    parts += [_say(rng, p, d) for p in rng.sample(PROBLEMS[topic], rng.randint(2, 4))]
    parts += [_say(rng, p, d) for p in rng.sample(INTERACTIONS, rng.randint(1, 2))]
    parts += [_say(rng, p, d) for p in rng.sample(IMPACTS, rng.randint(0, 2))]
    parts += [_say(rng, p, d) for p in rng.sample(DEMANDS[topic], rng.randint(1, 2))]
    middle = [rng.choice(CONNECTIVES) + p for p in parts[1:-1]]
    rng.shuffle(middle)
    return "".join([parts[0], *middle, parts[-1]])


def edit_share(original: str, changed: str) -> float:
    """The share of characters that differ (1 - difflib's similarity ratio)."""
    return 1.0 - difflib.SequenceMatcher(None, original, changed, autojunk=False).ratio()


def _variant(
    rng: random.Random,
    topic: str,
    sentences: list[str],
    copy: dict[str, str],
    low: float,
    high: float,
) -> tuple[str, float]:
    """One consumer's filing from the agent's copy: 5-15% of characters changed, then sentence
    moves. Changes are made one at a time until the share reaches a target drawn in [low, high]."""
    original = "".join(s.format(**copy) for s in sentences)
    target = rng.uniform(low, high)
    for _attempt in range(200):
        own = _details(rng, topic)
        details = dict(copy)
        lines = list(sentences)
        steps: list[tuple[str, object]] = [
            ("slot", k)
            for k in (
                "name",
                "date",
                "amount",
                "fee",
                "tail",
                "n",
                "rate",
                "firm",
                "city",
                "product",
            )
        ]
        steps += [("synonym", s) for s in rng.sample(SYNONYMS, 6)]
        steps += [("aside", a) for a in rng.sample(ASIDES, 2)] + [("drop", None)]
        rng.shuffle(steps)
        share = 0.0
        for kind, what in steps:
            trial_details, trial_lines = dict(details), list(lines)
            if kind == "slot":
                trial_details[str(what)] = own[str(what)]
            elif kind == "synonym":
                a, b = cast("tuple[str, str]", what)
                i = rng.randrange(len(trial_lines))
                if a not in trial_lines[i]:
                    continue
                trial_lines[i] = trial_lines[i].replace(a, b, 1)
            elif kind == "aside":
                trial_lines.insert(rng.randint(1, len(trial_lines)), str(what))
            elif len(trial_lines) > 4:
                del trial_lines[rng.randrange(1, len(trial_lines) - 1)]
            trial = "".join(s.format(**trial_details) for s in trial_lines)
            trial_share = edit_share(original, trial)
            if trial_share > high:
                continue
            details, lines, share = trial_details, trial_lines, trial_share
            if share >= target:
                break
        if low <= share <= high:
            # Move sentences around: no character changes, but shingles break at the seams.
            filled = [s.format(**details) for s in lines]
            for _ in range(rng.randint(0, 2)):
                i = rng.randrange(1, len(filled) - 1)
                filled[i], filled[i + 1] = filled[i + 1], filled[i]
            return "".join(filled), share
    raise AssertionError("no variant within the edit range")  # pragma: no cover


def quick_variant(
    rng: random.Random, topic: str, sentences: list[str], copy: dict[str, str]
) -> str:
    """A consumer's filing from the agent's copy without measuring the change (for volume, in
    the benchmark): their own name, date, amounts and numbers, a word changed, a sentence
    moved."""
    details = {
        **copy,
        **{k: v for k, v in _details(rng, topic).items() if k not in ("firm", "product", "city")},
    }
    lines = [s.format(**details) for s in sentences]
    a, b = rng.choice(SYNONYMS)
    i = rng.randrange(len(lines))
    lines[i] = lines[i].replace(a, b, 1)
    j = rng.randrange(1, len(lines) - 1)
    lines[j], lines[j + 1] = lines[j + 1], lines[j]
    return "".join(lines)


def corpus(
    seed: int = 20261203,
    *,
    variants: tuple[int, int] = (4, 10),
    independents: int = 60,
    edits: tuple[float, float] = (0.05, 0.15),
) -> Corpus:
    """Every template's filings (``variants`` per template) and ``independents`` independent
    complaints per topic, shuffled, with keys 1..n."""
    rng = random.Random(seed)
    drafts: list[tuple[str, str, str | None, float]] = []
    for topic, templates in TEMPLATES.items():
        for number, sentences in enumerate(templates):
            copy = _details(rng, topic)
            family = f"{topic}-{number}"
            for _ in range(rng.randint(*variants)):
                text, share = _variant(rng, topic, sentences, copy, *edits)
                drafts.append((topic, text, family, share))
        for _ in range(independents):
            drafts.append((topic, independent(rng, topic), None, 0.0))
    rng.shuffle(drafts)
    return Corpus(
        [
            Filing(key=i, topic=t, text=text, family=family, edit_share=share)
            for i, (t, text, family, share) in enumerate(drafts, start=1)
        ]
    )


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y) if x | y else 0.0


# -- the set is what it claims to be -------------------------------------------------------------


def test_template_filings_differ_from_the_agents_copy_by_5_to_15_percent() -> None:
    filings = [f for f in corpus().filings if f.family is not None]
    assert len(filings) >= 80
    assert all(0.05 <= f.edit_share <= 0.15 for f in filings)
    shares = sorted(f.edit_share for f in filings)
    # The whole range is used, not only its easy end.
    assert shares[len(shares) // 10] < 0.07 and shares[-len(shares) // 10] > 0.13
    # And the filings of one template are not copies of each other.
    texts = [f.text for f in filings]
    assert len(set(texts)) == len(texts)


def test_independent_complaints_on_one_topic_share_vocabulary() -> None:
    data = corpus()
    by_topic: dict[str, list[str]] = {}
    for f in data.filings:
        if f.family is None:
            by_topic.setdefault(f.topic, []).append(f.text)
    same = [
        jaccard(a, b) for texts in by_topic.values() for a, b in itertools.combinations(texts, 2)
    ]
    topics = list(by_topic)
    across = [
        jaccard(a, b)
        for t, u in itertools.pairwise(topics)
        for a, b in zip(by_topic[t], by_topic[u], strict=False)
    ]
    # Same topic: clearly more in common than across topics, and every pair shares something.
    assert statistics.median(same) > 2 * statistics.median(across)
    assert statistics.median(same) > 0.04
    # Some independent pairs share stock phrases and come close to what templates look like.
    assert max(same) > 0.2
    # Independent complaints and a template on the same topic share vocabulary too.
    templated = [f for f in data.filings if f.family and f.topic == "credit_card"]
    common = [jaccard(t.text, o) for t in templated for o in by_topic["credit_card"]]
    assert statistics.median(common) > 0.02
