//! The typed-topic generic parameters of generated clients and servers.

use proc_macro2::{Ident, TokenStream};
use quote::quote;

/// The typed-topic generic parameters of a service, in their several spellings.
pub(super) struct Generics {
    /// `<A: ?Sized = str, B: ?Sized = str>` (struct declaration), or nothing.
    pub(super) decl: TokenStream,
    /// `A: ?Sized = str, B: ?Sized = str` after another parameter.
    pub(super) decl_tail: TokenStream,
    /// `<A: ?Sized + AsRef<str>>` (impl with bounds).
    pub(super) bounded: TokenStream,
    pub(super) bounded_tail: TokenStream,
    /// `<A: ?Sized>` (impl without bounds).
    pub(super) unsized_: TokenStream,
    pub(super) unsized_tail: TokenStream,
    /// `<A, B>`
    pub(super) args: TokenStream,
    pub(super) args_tail: TokenStream,
    /// `PhantomData<fn(&A, &B)>`
    pub(super) phantom: TokenStream,
}

impl Generics {
    pub(super) fn new(tps: &[Ident]) -> Self {
        let phantom = quote!(::core::marker::PhantomData<fn(#(&#tps),*)>);
        let decl_tail = quote!(#(, #tps: ?::core::marker::Sized = str)*);
        let bounded_tail = quote!(#(, #tps: ?::core::marker::Sized + ::core::convert::AsRef<str>)*);
        let unsized_tail = quote!(#(, #tps: ?::core::marker::Sized)*);
        let args_tail = quote!(#(, #tps)*);
        if tps.is_empty() {
            Generics {
                decl: TokenStream::new(),
                decl_tail,
                bounded: TokenStream::new(),
                bounded_tail,
                unsized_: TokenStream::new(),
                unsized_tail,
                args: TokenStream::new(),
                args_tail,
                phantom,
            }
        } else {
            Generics {
                decl: quote!(<#(#tps: ?::core::marker::Sized = str),*>),
                decl_tail,
                bounded: quote!(<#(#tps: ?::core::marker::Sized + ::core::convert::AsRef<str>),*>),
                bounded_tail,
                unsized_: quote!(<#(#tps: ?::core::marker::Sized),*>),
                unsized_tail,
                args: quote!(<#(#tps),*>),
                args_tail,
                phantom,
            }
        }
    }
}
