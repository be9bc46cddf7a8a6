-- The carrier's result and error codes (docs/sgip-1.2.md section 5.1) with the
-- failure category the monthly report groups by and a Chinese and English
-- description. `profile` separates the SGIP 1.2 table from the 1.3 lists,
-- which give codes 33 and 34 other meanings; reports join on the profile the
-- gateway speaks (`sgip12` here). Seeded rows collapse on a re-run.
CREATE TABLE IF NOT EXISTS carrier_error_codes
(
    profile LowCardinality(String),
    code Int32,
    category LowCardinality(String) COMMENT 'NONE, or a FailureCategory symbol',
    transient UInt8 COMMENT '1 when resending later can succeed',
    description_zh String,
    description_en String
)
ENGINE = ReplacingMergeTree
ORDER BY (profile, code);

INSERT INTO carrier_error_codes (profile, code, category, transient, description_zh, description_en) VALUES
    ('sgip12', 0, 'NONE', 0, '无错误，命令正确接收', 'No error; command accepted'),
    ('sgip12', 1, 'GATEWAY_REFUSED', 0, '非法登录，如登录名、口令出错、登录名与口令不符等', 'Illegal login: bad name or password'),
    ('sgip12', 2, 'GATEWAY_REFUSED', 0, '重复登录，如在同一TCP/IP连接中连续两次以上请求登录', 'Repeated login on one connection'),
    ('sgip12', 3, 'GATEWAY_REFUSED', 1, '连接过多，指单个节点要求同时建立的连接数过多', 'Too many connections from one node'),
    ('sgip12', 4, 'GATEWAY_REFUSED', 0, '登录类型错，指bind命令中的logintype字段出错', 'Wrong LoginType in Bind'),
    ('sgip12', 5, 'GATEWAY_REFUSED', 0, '参数格式错，指命令中参数值与参数类型不符或与协议规定的范围不符', 'Parameter format error'),
    ('sgip12', 6, 'NO_SUCH_NUMBER', 0, '非法手机号码，协议中所有手机号码字段出现非86130号码或手机号码前未加“86”时都应报错', 'Illegal mobile number'),
    ('sgip12', 7, 'GATEWAY_REFUSED', 0, '消息ID错', 'Wrong message (command) ID'),
    ('sgip12', 8, 'GATEWAY_REFUSED', 0, '信息长度错', 'Wrong message length'),
    ('sgip12', 9, 'GATEWAY_REFUSED', 0, '非法序列号，包括序列号重复、序列号格式错误等', 'Illegal sequence number'),
    ('sgip12', 10, 'GATEWAY_REFUSED', 0, '非法操作GNS', 'Illegal GNS operation'),
    ('sgip12', 11, 'NETWORK', 1, '节点忙，指本节点存储队列满或其他原因，暂时不能提供服务的情况', 'Node busy'),
    ('sgip12', 21, 'NETWORK', 1, '目的地址不可达，指路由表存在路由且消息路由正确但被路由的节点暂时不能提供服务的情况', 'Destination unreachable'),
    ('sgip12', 22, 'NETWORK', 0, '路由错，指路由表存在路由但消息路由出错的情况，如转错SMG等', 'Routing error'),
    ('sgip12', 23, 'NETWORK', 0, '路由不存在，指消息路由的节点在路由表中不存在', 'No route'),
    ('sgip12', 24, 'GATEWAY_REFUSED', 0, '计费号码无效，鉴权不成功时反馈的错误信息', 'Invalid charge number'),
    ('sgip12', 25, 'POWERED_OFF', 1, '用户不能通信（如不在服务区、未开机等情况）', 'User cannot be reached (out of coverage, handset off)'),
    ('sgip12', 26, 'POWERED_OFF', 1, '手机内存不足', 'Handset memory full'),
    ('sgip12', 27, 'OTHER', 0, '手机不支持短消息', 'Handset does not support SMS'),
    ('sgip12', 28, 'OTHER', 1, '手机接收短消息出现错误', 'Handset error receiving the SMS'),
    ('sgip12', 29, 'NO_SUCH_NUMBER', 0, '不知道的用户', 'Unknown user'),
    ('sgip12', 30, 'OTHER', 0, '不提供此功能', 'Function not provided'),
    ('sgip12', 31, 'OTHER', 0, '非法设备', 'Illegal device'),
    ('sgip12', 32, 'NETWORK', 1, '系统失败', 'System failure'),
    ('sgip12', 33, 'NETWORK', 1, '短信中心队列满', 'SMSC queue full'),
    ('sgip13', 13, 'GATEWAY_REFUSED', 0, '业务代码未分配', 'Service code not allocated'),
    ('sgip13', 14, 'GATEWAY_REFUSED', 0, '计费类型或资费错误', 'Fee or billing type wrong'),
    ('sgip13', 17, 'GATEWAY_REFUSED', 0, 'LINKID不匹配', 'LinkID mismatch'),
    ('sgip13', 18, 'GATEWAY_REFUSED', 0, '用户未订购', 'User has not subscribed'),
    ('sgip13', 19, 'GATEWAY_REFUSED', 0, 'UserCount不为1，不允许群发', 'UserCount is not 1; group sends not allowed'),
    ('sgip13', 32, 'GATEWAY_REFUSED', 0, '包格式错误', 'Packet format error'),
    ('sgip13', 33, 'GATEWAY_REFUSED', 1, '超过流量限制', 'Flow limit exceeded (throttling)'),
    ('sgip13', 34, 'GATEWAY_REFUSED', 1, '登录过于频繁', 'Logins too frequent'),
    ('sgip13', 50, 'GATEWAY_REFUSED', 0, '非法内容', 'Illegal content'),
    ('sgip13', 61, 'EXPIRED', 0, '超过有效期', 'Validity period expired'),
    ('sgip13', 62, 'EXPIRED', 0, '定时发送时间已过', 'Schedule time already passed'),
    ('sgip13', 68, 'GATEWAY_REFUSED', 0, '用户鉴权失败', 'User authentication failed'),
    ('sgip13', 69, 'BLACKLISTED', 0, '黑名单用户', 'Blacklisted user'),
    ('sgip13', 70, 'NETWORK', 1, '网络断连或对端接口关闭', 'Network down or peer interface closed'),
    ('sgip13', 72, 'NETWORK', 0, '路由不存在', 'No route'),
    ('sgip13', 73, 'NETWORK', 1, '应答超时', 'Response timeout'),
    ('sgip13', 88, 'GATEWAY_REFUSED', 1, '流量控制错，超过最大流量', 'Flow control: traffic exceeds the maximum'),
    ('sgip13', 108, 'SUSPENDED', 0, '用户停机', 'Suspended user'),
    ('sgip13', 110, 'BLACKLISTED', 0, '黑名单或非活动用户', 'Blacklisted or inactive user'),
    ('sgip13', 182, 'GATEWAY_REFUSED', 1, '超过每日发送量限制', 'Daily volume limit exceeded')
