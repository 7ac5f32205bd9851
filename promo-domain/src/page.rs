//! Pagination as the REST contract defines it: `page` from 1, `size` 1..=100.

use crate::{DomainError, DomainResult};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    pub page: u32,
    pub size: u32,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest { page: 1, size: 20 }
    }
}

impl PageRequest {
    pub fn parse(page: Option<i64>, size: Option<i64>) -> DomainResult<Self> {
        let page = page.unwrap_or(1);
        let size = size.unwrap_or(20);
        if !(1..=1_000_000).contains(&page) {
            return Err(DomainError::validation(
                "page",
                "page must be between 1 and 1000000",
            ));
        }
        if !(1..=100).contains(&size) {
            return Err(DomainError::validation(
                "size",
                "size must be between 1 and 100",
            ));
        }
        Ok(PageRequest {
            page: page as u32,
            size: size as u32,
        })
    }

    pub fn offset(&self) -> i64 {
        (self.page as i64 - 1) * self.size as i64
    }

    pub fn limit(&self) -> i64 {
        self.size as i64
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub size: u32,
    pub total: i64,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, req: PageRequest, total: i64) -> Self {
        Page {
            items,
            page: req.page,
            size: req.size,
            total,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            page: self.page,
            size: self.size,
            total: self.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_bounds_are_enforced() {
        assert!(PageRequest::parse(None, Some(0)).is_err());
        assert!(PageRequest::parse(None, Some(101)).is_err());
        assert!(PageRequest::parse(Some(0), None).is_err());
        let p = PageRequest::parse(Some(3), Some(10)).unwrap();
        assert_eq!(p.offset(), 20);
    }
}
