"""Alerts from GCN-like Kafka topics: parsing notices into one normalised :class:`Alert`.

>>> from dtlive.alerts import parse_notice
>>> parse_notice(b'{"mission": "Super-Kamiokande", "id": "SN.1", "alert_tense": "test"}').is_test
True
"""

from dtlive.alerts.notices import Alert, NoticeError, alert_from_dict, alert_to_dict, parse_notice

__all__ = ["Alert", "NoticeError", "alert_from_dict", "alert_to_dict", "parse_notice"]
