"""Errors a user can cause and fix: they end in one clear sentence, never a traceback."""


class FerlabError(Exception):
    """A problem with the user's input, data or setup; the message says what to do."""


class DataError(FerlabError):
    """The dataset (archive, folder, CSV or table) is missing, corrupt or not FER2013."""
