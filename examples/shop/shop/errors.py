"""The shop's errors. ``app.conf.result_exception_modules`` lists this module, so a
caller's ``result.get()`` raises these very classes and ``except PaymentDeclinedError:``
works around it."""


class ShopError(Exception):
    """Base class of the shop's errors."""


class OutOfStockError(ShopError):
    """An order asks for more of an item than is left."""


class PaymentDeclinedError(ShopError):
    """The card was declined: trying again does not help."""


class GatewayTimeoutError(ShopError):
    """The payment gateway did not answer in time: trying again later may help."""


class WarehouseBusyError(ShopError):
    """The warehouse cannot take a shipment right now."""
